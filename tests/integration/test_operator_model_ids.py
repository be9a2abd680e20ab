"""A serving's modelId is its own in the cluster, through what can happen to the counter and to
the servings: the counter lost, a serving restored with another's id in its status, a serving
deleted and made anew under its name."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from modelserving_operator.modelids import COUNTER_ANNOTATION, CRD_NAME, LEGACY_COUNTER_CONFIGMAP
from modelserving_operator.names import LABEL_SERVING_UID as SERVING_UID
from tests.support.operator_process import COUNTER_NAMESPACE
from tests.support.servings import get_serving, is_ready, read_or_none, serving_manifest
from tests.support.waiting import wait_for

OFF = {"enabled": False}  # no topic: these stories are about ids alone


def create(crds, namespace: str, name: str) -> None:
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name, logging=OFF)
    )


def ready(crds, namespace: str, name: str) -> dict:
    return wait_for(lambda: is_ready(crds, namespace, name), timeout=60, what=f"{name} Ready")


def test_a_lost_counter_restarts_above_every_id_in_use(operator, crds, kube_client, namespace):
    # Given servings with their ids
    for name in ("a", "b"):
        create(crds, namespace, name)
    in_use = [ready(crds, namespace, name)["status"]["modelId"] for name in ("a", "b")]

    # When the counter is lost (the CRD replaced; an older operator's ConfigMap gone with its
    # namespace) and the operator restarts
    operator.stop()
    extensions = client.ApiextensionsV1Api(kube_client)
    extensions.patch_custom_resource_definition(
        CRD_NAME, {"metadata": {"annotations": {COUNTER_ANNOTATION: None}}}
    )
    try:
        client.CoreV1Api(kube_client).delete_namespaced_config_map(
            LEGACY_COUNTER_CONFIGMAP, COUNTER_NAMESPACE
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
    operator.start()
    create(crds, namespace, "new")

    # Then the new serving's id is above every id in use, and theirs are as they were
    new = ready(crds, namespace, "new")["status"]["modelId"]
    assert new > max(in_use), (new, in_use)
    assert [get_serving(crds, namespace, n)["status"]["modelId"] for n in ("a", "b")] == in_use
    annotations = extensions.read_custom_resource_definition(CRD_NAME).metadata.annotations
    assert int(annotations[COUNTER_ANNOTATION]) > new  # the counter is back, past it


def test_of_two_servings_with_one_id_the_one_made_later_gets_a_fresh_id(operator, crds, namespace):
    # Given a serving with its id, and a second one made later
    create(crds, namespace, "original")
    original = ready(crds, namespace, "original")["status"]["modelId"]
    create(crds, namespace, "restored")
    own = ready(crds, namespace, "restored")["status"]["modelId"]

    # When the second's status comes back from a backup holding the first's id
    crds.patch_namespaced_custom_object_status(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "restored",
        {"status": {"modelId": original}},
    )

    # Then the one made later gets a fresh id, and the first keeps its own
    def fresh() -> dict | None:
        restored = get_serving(crds, namespace, "restored")
        return restored if restored["status"]["modelId"] not in (original, own) else None

    wait_for(fresh, timeout=30, what="the restored serving's fresh id")
    assert get_serving(crds, namespace, "original")["status"]["modelId"] == original


def test_a_serving_made_anew_under_its_name_gets_its_own_id_status_and_binding(
    operator, crds, kube_client, namespace
):
    # Given a serving with auth kubernetes (its ClusterRoleBinding is cluster-scoped: the
    # operator deletes it itself when the serving goes)
    manifest = serving_manifest("mnist", logging=OFF, auth={"mode": "kubernetes"})
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    old = ready(crds, namespace, "mnist")

    # When it is deleted and made anew at once
    crds.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist")
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)

    # Then the new one is Ready with an id and a status of its own
    def new_ready() -> dict | None:
        serving = is_ready(crds, namespace, "mnist")
        return serving if serving and serving["metadata"]["uid"] != old["metadata"]["uid"] else None

    new = wait_for(new_ready, timeout=60, what="the new mnist Ready")
    assert new["status"]["modelId"] != old["status"]["modelId"]

    # And its binding is its own, and stays: the old one's deletion does not take it
    rbac = client.RbacAuthorizationV1Api(kube_client)
    name = f"modelserving:{namespace}:mnist"

    def binding_of_new() -> client.V1ClusterRoleBinding | None:
        binding = read_or_none(rbac.read_cluster_role_binding, name)
        labels = (binding.metadata.labels or {}) if binding else {}
        return binding if labels.get(SERVING_UID) == new["metadata"]["uid"] else None

    binding = wait_for(binding_of_new, timeout=30, what="the new mnist's binding")
    # ... once the operator has handled the old one's deletion (it says so)
    handled = f"ModelServing {namespace}/mnist deleted"
    said = wait_for(
        lambda: next((ln for ln in operator.log().splitlines() if handled in ln), None),
        30,
        "the operator to handle the old mnist's deletion",
    )
    now = read_or_none(rbac.read_cluster_role_binding, name)
    assert now is not None and now.metadata.uid == binding.metadata.uid, said
    assert get_serving(crds, namespace, "mnist")["status"]["modelId"] == new["status"]["modelId"]
