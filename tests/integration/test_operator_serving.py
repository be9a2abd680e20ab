"""The operator against the real local cluster and Kafka: a platform team's story.

Each test runs `modelserving operator` for real (a subprocess, watching only the
test's namespace) and acts through the API as a user would with kubectl.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support.servings import (
    condition,
    config_file,
    configmaps_of,
    get_serving,
    is_ready,
    read_or_none,
    serving_manifest,
)
from tests.support.waiting import wait_for

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True


def kafka_topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def topics() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    return asyncio.run(topics())


def test_a_serving_becomes_ready_with_its_children_and_topic(
    operator, crds, kube_client, namespace, local_env, topic
):
    # Given a ModelServing with the inference log on a topic of its own
    topic = f"{namespace}.{topic}"  # a serving's topic starts with its namespace
    started = time.monotonic()
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"kafka": {"topic": topic, "partitions": 2}}),
    )

    # Then it becomes Ready once KWOK makes the pods ready, with its endpoint in status
    serving = wait_for(
        lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready"
    )
    print(f"\ncreate -> Ready: {time.monotonic() - started:.2f} s")
    status = serving["status"]
    assert status["endpoint"] == f"http://mnist.{namespace}.svc:8080/v1/models/mnist:predict"
    assert isinstance(status["modelId"], int)
    assert status["readyText"] == "1/1"
    # And kubectl get shows it Ready (the condition) with its one replica ready
    table = local_env.kubectl("get", "modelservings", "-n", namespace).stdout.split("\n")
    columns = dict(zip(table[0].split(), table[1].split(), strict=True))
    shown = (columns["READY"], columns["STATUS"], columns["REPLICAS"])
    assert shown == ("True", "Available", "1/1"), table
    assert condition(serving, "LoggingReady")["reason"] == "TopicReady"

    # And its children exist with the right content
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    pod = apps.read_namespaced_deployment("mnist", namespace).spec.template.spec
    assert [c.name for c in pod.containers] == [api.TFSERVING_CONTAINER, api.SIDECAR_CONTAINER]
    service = core.read_namespaced_service("mnist", namespace)
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(8080, "http"), (8500, "grpc")]
    sidecar_yaml = config_file(core, apps, namespace, "mnist", "sidecar.yaml")
    assert f"modelId: {status['modelId']}" in sidecar_yaml and topic in sidecar_yaml
    models = config_file(core, apps, namespace, "mnist", "models.config")
    assert "versions: 1" in models
    policy = client.NetworkingV1Api(kube_client).read_namespaced_network_policy("mnist", namespace)
    assert [p.port for rule in policy.spec.ingress for p in rule.ports] == [
        api.SIDECAR_PORT,
        api.SIDECAR_GRPC_PORT,
    ]

    # And the topic exists in the real broker
    assert topic in kafka_topics(local_env.kafka_bootstrap)

    # And `kubectl describe` tells what was created, with the modelId, in one Event
    events = [
        e
        for e in core.list_namespaced_event(namespace).items
        if (e.involved_object.kind, e.involved_object.name) == (api.KIND, "mnist")
    ]
    created = [e.message for e in events if e.reason == "Created"]
    assert len(created) == 1
    assert "Deployment mnist" in created[0] and "Service mnist" in created[0]
    assert created[0].endswith(f"; modelId {status['modelId']}")
    assert not [e for e in events if e.reason == "ModelIdAssigned"]


def test_a_topic_of_another_namespace_is_refused_never_created_and_nothing_is_logged(
    operator, crds, kube_client, namespace, local_env, topic
):
    # Given a serving that names a topic of another namespace's
    theirs = f"x{namespace}.{topic}"
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"kafka": {"topic": theirs}}),
    )

    # Then LoggingReady says the topic is refused and what to name instead
    def logging_ready() -> dict:
        return condition(get_serving(crds, namespace, "mnist"), "LoggingReady")

    said = wait_for(
        lambda: logging_ready().get("reason") == "TopicRefused" and logging_ready(),
        60,
        "LoggingReady TopicRefused",
    )
    assert said["status"] == "False"
    assert theirs in said["message"] and f"({namespace}.)" in said["message"]
    # And the sidecars log nothing, anywhere
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    sidecar = wait_for(
        lambda: config_file(core, apps, namespace, "mnist", "sidecar.yaml"),
        60,
        "the sidecar's config",
    )
    assert theirs not in sidecar
    # And the operator did not create the topic, and told it once in a Warning Event
    assert theirs not in kafka_topics(local_env.kafka_bootstrap)

    # (kopf posts events from a queue of its own: the condition can come first)
    def refusals() -> list:
        return [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.involved_object.name == "mnist" and e.reason == "TopicRefused"
        ]

    events = wait_for(refusals, 30, "the TopicRefused Event")
    assert [(e.type, e.count or 1) for e in events] == [("Warning", 1)]


def test_a_new_version_rolls_out(operator, crds, kube_client, namespace):
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    before = apps.read_namespaced_deployment("mnist", namespace).spec.template.metadata.annotations
    old_template = apps.read_namespaced_deployment("mnist", namespace).spec.template
    old_configmaps = {
        name: core.read_namespaced_config_map(name, namespace).data
        for name in configmaps_of(old_template)
        if name.startswith("mnist-")
    }
    assert len(old_configmaps) == 2

    # When the user edits the version (kubectl edit)
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "mnist",
        {"spec": {"model": {"version": 2}}},
    )

    # Then TF Serving's config names version 2, the pods roll, and the serving is Ready again
    wait_for(
        lambda: (
            "versions: 2" in (config_file(core, apps, namespace, "mnist", "models.config") or "")
        ),
        timeout=30,
        what="models.config at version 2",
    )
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("mnist", namespace).spec.template.metadata.annotations
            != before
        ),
        timeout=30,
        what="the pod template to change (a rollout)",
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=60, what="Ready at gen 2")
    # And the old ReplicaSet's pods still read the files they started with: its template names
    # the old ConfigMaps, which are there with their content unchanged (an old pod whose TF
    # Serving restarts mid-roll loads version 1 still, as its sidecar routes)
    selector = f"{api.LABEL_INSTANCE}=mnist"
    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector=selector).items
    (old_rs,) = [
        rs for rs in replica_sets if set(old_configmaps) <= set(configmaps_of(rs.spec.template))
    ]
    assert old_rs.spec.template.metadata.annotations == before
    for name, data in old_configmaps.items():
        assert core.read_namespaced_config_map(name, namespace).data == data
    assert "versions: 1" in "".join(d.get("models.config", "") for d in old_configmaps.values())
    old_pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    for pod in old_pods:
        if pod.metadata.owner_references[0].name == old_rs.metadata.name:
            assert set(old_configmaps) <= set(configmaps_of(pod))


def test_what_the_spec_no_longer_asks_for_leaves_the_children(
    operator, crds, kube_client, namespace
):
    # Children are created, not applied (cheaper for the API server); an apply omitting a field
    # the create set would leave it, unless the operator takes the created fields as applied.
    env = [{"name": "EXTRA_FLAG", "value": "1"}, {"name": "KEPT", "value": "2"}]
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", server={"env": env}),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps = client.AppsV1Api(kube_client)

    def env_names() -> set[str]:
        pod = apps.read_namespaced_deployment("mnist", namespace).spec.template.spec
        return {e.name for c in pod.containers for e in c.env or []}

    assert {"EXTRA_FLAG", "KEPT"} <= env_names()

    # When the user drops one variable
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "mnist",
        {"spec": {"server": {"env": env[1:]}}},
    )

    # Then the Deployment's pods lose it, and keep the other
    wait_for(lambda: "EXTRA_FLAG" not in env_names(), timeout=30, what="EXTRA_FLAG gone")
    assert "KEPT" in env_names()
    wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=60, what="Ready at gen 2")
    managers = [
        (m.manager, m.operation)
        for m in apps.read_namespaced_deployment("mnist", namespace).metadata.managed_fields
        if m.manager == "modelserving-operator"
    ]
    assert managers == [("modelserving-operator", "Apply")]


def test_children_deleted_or_edited_by_hand_are_restored(operator, crds, kube_client, namespace):
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    template = apps.read_namespaced_deployment("mnist", namespace).spec.template
    (sidecar_cm,) = [n for n in configmaps_of(template) if n.startswith("mnist-sidecar-")]
    original = core.read_namespaced_config_map(sidecar_cm, namespace).data

    # The pods' ConfigMaps are immutable: an edit is refused by the API server itself
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_config_map(sidecar_cm, namespace, {"data": {"sidecar.yaml": "x"}})
    assert refused.value.status == 422
    core.delete_namespaced_service("mnist", namespace)
    core.delete_namespaced_config_map(sidecar_cm, namespace)

    wait_for(
        lambda: read_or_none(core.read_namespaced_service, "mnist", namespace),
        timeout=30,
        what="the Service back",
    )
    wait_for(
        lambda: (
            (cm := read_or_none(core.read_namespaced_config_map, sidecar_cm, namespace))
            and cm.data == original
        ),
        timeout=30,
        what="the sidecar ConfigMap restored",
    )


def test_children_changed_in_place_by_hand_are_repaired(operator, crds, kube_client, namespace):
    """A child changed, not deleted: a MODIFIED event of the operator's own watch stream of
    the children (runtime/watches), which marks the serving, within the deadline a deleted
    child is restored in."""
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    service = core.read_namespaced_service("mnist", namespace)
    selector = dict(service.spec.selector)

    # When the Deployment is scaled by hand, and the Service's selector edited (a value the
    # operator sets: a key added by hand would stay, the field of another manager)
    apps.patch_namespaced_deployment_scale("mnist", namespace, {"spec": {"replicas": 3}})
    first = sorted(selector)[0]
    core.patch_namespaced_service(
        "mnist", namespace, {"spec": {"selector": {**selector, first: "by-hand"}}}
    )

    # Then both are put back as the spec says
    wait_for(
        lambda: apps.read_namespaced_deployment("mnist", namespace).spec.replicas == 1,
        timeout=30,
        what="the Deployment scaled back to 1",
    )
    wait_for(
        lambda: core.read_namespaced_service("mnist", namespace).spec.selector == selector,
        timeout=30,
        what="the Service's selector restored",
    )


def test_deleting_a_serving_removes_its_children(operator, crds, kube_client, namespace):
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)

    crds.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist")

    def all_gone() -> bool:
        return not any(
            [
                read_or_none(apps.read_namespaced_deployment, "mnist", namespace),
                read_or_none(core.read_namespaced_service, "mnist", namespace),
                *core.list_namespaced_config_map(
                    namespace, label_selector=f"{api.LABEL_INSTANCE}=mnist"
                ).items,
            ]
        )

    wait_for(all_gone, timeout=60, what="the children garbage-collected")


def test_kafka_away_is_reported_without_blocking_the_serving(operator, crds, namespace):
    # A broker address where nothing listens: the serving must still become Ready
    spec = {"kafka": {"bootstrapServers": "127.0.0.1:1"}}
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist", logging=spec)
    )
    serving = wait_for(
        lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready"
    )
    wait_for(
        lambda: (
            condition(get_serving(crds, namespace, "mnist"), "LoggingReady").get("reason")
            == "KafkaUnreachable"
        ),
        timeout=30,
        what="LoggingReady False with KafkaUnreachable",
    )
    assert condition(serving, "Degraded").get("status") == "False"


def test_model_ids_are_distinct(operator, crds, namespace):
    for name in ("a", "b", "c"):
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name)
        )
    servings = [
        wait_for(lambda n=n: is_ready(crds, namespace, n), timeout=60, what=f"{n} Ready")
        for n in ("a", "b", "c")
    ]
    ids = [s["status"]["modelId"] for s in servings]
    assert len(set(ids)) == 3
    for serving in servings:  # the id goes in the status alone: the serving is not written
        assert f"{api.GROUP}/model-id" not in (serving["metadata"].get("annotations") or {})


def test_a_copied_or_hand_written_model_id_gets_an_id_of_its_own(operator, crds, namespace):
    # Given a serving with its modelId
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("a")
    )
    first = wait_for(lambda: is_ready(crds, namespace, "a"), timeout=60, what="a Ready")
    # The annotation operators before this one wrote the id in, and a manifest copied from one
    # of their servings carries: it names nothing
    key = f"{api.GROUP}/model-id"

    # When a manifest is copied with the annotation, and another names the id by hand
    for name in ("copy", "chooser"):
        manifest = serving_manifest(name)
        manifest["metadata"]["annotations"] = {key: str(first["status"]["modelId"])}
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
        )

    # Then each gets an id of its own, and a keeps its id
    others = [
        wait_for(lambda n=n: is_ready(crds, namespace, n), timeout=60, what=f"{n} Ready")
        for n in ("copy", "chooser")
    ]
    ids = [first["status"]["modelId"], *(s["status"]["modelId"] for s in others)]
    assert len(set(ids)) == 3, ids
    assert get_serving(crds, namespace, "a")["status"]["modelId"] == ids[0]

    # And an edit of the annotation does not change the serving's id (with a change of its
    # spec, whose observedGeneration says that the operator has reconciled the edit)
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "copy",
        {"metadata": {"annotations": {key: str(ids[0])}}, "spec": {"projectId": 80}},
    )
    edited = wait_for(
        lambda: is_ready(crds, namespace, "copy", generation=2),
        timeout=60,
        what="the edited copy reconciled",
    )
    assert edited["status"]["modelId"] == ids[1]


@pytest.mark.own_operator  # it restarts the operator
def test_a_restart_over_unchanged_servings_writes_nothing(operator, crds, kube_client, namespace):
    # Logging off: Kafka outages made by other tests must not count as a change here
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"enabled": False}),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    net = client.NetworkingV1Api(kube_client)

    def rv(obj) -> str:
        return obj.metadata.resource_version

    def versions() -> dict[str, str]:
        return {
            "serving": get_serving(crds, namespace, "mnist")["metadata"]["resourceVersion"],
            "deployment": rv(apps.read_namespaced_deployment("mnist", namespace)),
            "service": rv(core.read_namespaced_service("mnist", namespace)),
            "policy": rv(net.read_namespaced_network_policy("mnist", namespace)),
            **{
                cm.metadata.name: rv(cm)
                for cm in core.list_namespaced_config_map(
                    namespace, label_selector=f"{api.LABEL_INSTANCE}=mnist"
                ).items
            },
        }

    # Settled: two reads a moment apart agree
    before = wait_for(
        lambda: (v := versions()) == versions() and v, timeout=30, what="a settled serving"
    )

    def operator_events() -> int:
        events = core.list_namespaced_event(namespace).items
        return sum(1 for e in events if e.involved_object.kind == api.KIND)

    events_before = operator_events()

    operator.stop()
    operator.start()
    # The new operator has looked at the serving, and reconciled it against every child kind
    # listed (its workers wait for every watch stream's first listing), once it has caught up
    wait_for(
        lambda: (
            "Handler 'serving_event' succeeded" in operator.log()
            and "caught up: 1 servings reconciled" in operator.log()
        ),
        timeout=60,
        what="the restarted operator to handle the serving",
    )

    assert versions() == before
    assert operator_events() == events_before


def test_invalid_specs_are_refused_naming_the_field(crds, namespace):
    cases = {
        "spec.model.version": {"model": {"version": 0, "basePath": "s3://m/x"}},
        "spec.model.basePath": {"model": {"version": 1, "basePath": "ftp://m/x"}},
        "spec.auth.apiKeys.secretName": {"auth": {"mode": "apiKey"}},
        "spec.autoscaling.maxReplicas": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        # Zero needs the concurrency autoscaler (an HPA on CPU cannot scale to zero).
        "spec.autoscaling.minReplicas 0 needs": {
            "autoscaling": {"enabled": True, "minReplicas": 0}
        },
        "spec.logging.kafka.topic": {"logging": {"kafka": {"topic": "not a topic"}}},
        "spec.logging.mode": {"logging": {"mode": "SOME"}},
        "spec.ingress.host": {"ingress": {"enabled": True, "tls": {"secretName": "t"}}},
    }
    for field, spec in cases.items():
        manifest = serving_manifest("bad")
        manifest["spec"].update(spec)
        with pytest.raises(ApiException) as refused:
            crds.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
            )
        assert refused.value.status == 422, field
        assert field in refused.value.body, (field, refused.value.body)
    no_auth = serving_manifest("bad")
    del no_auth["spec"]["auth"]
    with pytest.raises(ApiException) as refused:
        crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, no_auth)
    assert "spec.auth" in refused.value.body
    if os.environ.get("MODELSERVING_DEBUG"):
        print(refused.value.body)


def test_kubernetes_auth_binds_the_pods_service_account(operator, crds, kube_client, namespace):
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", auth={"mode": "kubernetes"}),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    rbac, apps = client.RbacAuthorizationV1Api(kube_client), client.AppsV1Api(kube_client)
    binding_name = f"modelserving:{namespace}:mnist"
    binding = rbac.read_cluster_role_binding(binding_name)
    assert binding.role_ref.name == "modelserving-sidecar-auth"
    assert [(s.name, s.namespace) for s in binding.subjects] == [("mnist-sidecar", namespace)]
    pod = apps.read_namespaced_deployment("mnist", namespace).spec.template.spec
    assert pod.service_account_name == "mnist-sidecar"

    # The binding is cluster-scoped (no ownerReference): the operator removes it itself
    crds.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist")
    wait_for(
        lambda: read_or_none(rbac.read_cluster_role_binding, binding_name) is None,
        timeout=30,
        what="the ClusterRoleBinding removed",
    )


@pytest.mark.own_operator  # it stops the operator
def test_a_binding_whose_serving_went_while_no_operator_ran_is_removed(
    operator, crds, kube_client, namespace
):
    # Given a serving with auth kubernetes, Ready, and a second one that stays
    for name in ("gone", "kept"):
        crds.create_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            serving_manifest(name, auth={"mode": "kubernetes"}, logging={"enabled": False}),
        )
    for name in ("gone", "kept"):
        wait_for(lambda n=name: is_ready(crds, namespace, n), timeout=60, what=f"{name} Ready")
    rbac = client.RbacAuthorizationV1Api(kube_client)

    # When the first is deleted while no operator runs (its cluster-scoped binding has no
    # owner to go with), and the operator starts again
    operator.stop()
    crds.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "gone")
    assert read_or_none(rbac.read_cluster_role_binding, f"modelserving:{namespace}:gone")
    operator.start()

    # Then the orphan binding is removed, and the other serving's stays
    wait_for(
        lambda: (
            read_or_none(rbac.read_cluster_role_binding, f"modelserving:{namespace}:gone") is None
        ),
        timeout=30,
        what="the orphan ClusterRoleBinding removed",
    )
    wait_for(lambda: "caught up" in operator.log(), timeout=30, what="the operator caught up")
    assert read_or_none(rbac.read_cluster_role_binding, f"modelserving:{namespace}:kept")


def hand_made_service_account(namespace: str) -> dict:
    """A ServiceAccount a team made by hand, named as a serving `victim`'s sidecar's would be."""
    return {"metadata": {"name": "victim-sidecar", "namespace": namespace}}


def hand_made_deployment(namespace: str) -> dict:
    """A Deployment a team made by hand, named `victim` and even labelled as the operator
    labels a serving's children (so that the operator's watch cache holds it)."""
    labels = {
        api.LABEL_NAME: "modelserving",
        api.LABEL_INSTANCE: "victim",
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }
    pod = {"containers": [{"name": "web", "image": "nginx:1"}]}
    return {
        "metadata": {"name": "victim", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "victim-web"}},
            "template": {"metadata": {"labels": {"app": "victim-web"}}, "spec": pod},
        },
    }


@pytest.mark.parametrize(
    ("kind", "name"), [("ServiceAccount", "victim-sidecar"), ("Deployment", "victim")]
)
def test_a_serving_leaves_an_object_of_its_childs_name_that_is_not_its_own(
    operator, crds, kube_client, namespace, kind, name
):
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    read = {
        "ServiceAccount": lambda: core.read_namespaced_service_account(name, namespace),
        "Deployment": lambda: apps.read_namespaced_deployment(name, namespace),
    }[kind]
    # Given an object a team made by hand, named as a child of a serving `victim` would be
    if kind == "ServiceAccount":
        core.create_namespaced_service_account(namespace, hand_made_service_account(namespace))
    else:
        apps.create_namespaced_deployment(namespace, hand_made_deployment(namespace))
    before = read()

    # When a ModelServing named `victim` is created
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("victim")
    )

    # Then its status says Conflict, naming the object and what to do
    def conflict() -> dict | None:
        ready = condition(get_serving(crds, namespace, "victim"), "Ready")
        return ready if ready.get("reason") == "Conflict" else None

    ready = wait_for(conflict, timeout=30, what="the serving's Conflict")
    assert ready["status"] == "False"
    assert ready["message"].startswith(f"{kind} {name} already exists and is not this serving's")
    assert "Delete or rename it, or give the serving another name" in ready["message"]

    # And an Event says it too, once
    def told() -> list[str]:
        events = core.list_namespaced_event(namespace).items
        return [e.message for e in events if e.reason == "Conflict"]

    assert wait_for(told, timeout=10, what="the Conflict Event") == [ready["message"]]
    # And the object is as it was: no ownerReference, the same spec
    after = read()
    assert not after.metadata.owner_references
    assert after.metadata.labels == before.metadata.labels
    if kind == "Deployment":
        assert after.metadata.generation == before.metadata.generation
        assert after.spec.template == before.spec.template
    else:
        assert after.metadata.resource_version == before.metadata.resource_version
    # And no pods of the serving run as, or next to, another's object
    if kind == "ServiceAccount":
        assert read_or_none(apps.read_namespaced_deployment, "victim", namespace) is None

    # When the serving is deleted, and the garbage collector has removed what it owned
    uid = get_serving(crds, namespace, "victim")["metadata"]["uid"]
    crds.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "victim")

    def owned_left() -> list[str]:
        owned = [
            *core.list_namespaced_config_map(namespace).items,
            *core.list_namespaced_service_account(namespace).items,
            *apps.list_namespaced_deployment(namespace).items,
        ]
        return [
            o.metadata.name
            for o in owned
            if any(ref.uid == uid for ref in o.metadata.owner_references or [])
        ]

    wait_for(
        lambda: read_or_none(get_serving, crds, namespace, "victim") is None and not owned_left(),
        timeout=60,
        what="the serving and what it owned gone",
    )

    # Then the object made by hand is still there
    assert read().metadata.uid == before.metadata.uid
