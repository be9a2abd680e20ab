"""A serving's ConfigMap write refused by the cluster (here a ValidatingAdmissionPolicy, as a
webhook or a quota would) while its Deployment's would be allowed: the pods do not roll onto
files that were never written; Degraded says which write failed while Ready stays True, as the
old pods serve; once the cluster allows it, the roll goes through."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support.ready_watch import ReadyWatch
from tests.support.servings import (
    condition,
    config_file,
    configmaps_of,
    get_serving,
    is_ready,
    serving_manifest,
)
from tests.support.waiting import wait_for


@pytest.fixture
def operator_flags() -> list[str]:
    """A failed write is tried again soon, not after the default 30 s."""
    return ["--retry-seconds", "2"]


def deny_serving_configmaps(kube_client, namespace: str) -> tuple[str, str]:
    """A policy that refuses the creation of the serving's ConfigMaps in the namespace."""
    admission = client.AdmissionregistrationV1Api(kube_client)
    name = f"no-serving-configmaps-{namespace}"
    admission.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.metadata.labels) || "
                        f"!('{api.LABEL_INSTANCE}' in object.metadata.labels)",
                        "message": "the serving's ConfigMaps are frozen",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    return name, name


def refused(core, namespace: str) -> bool:
    """Whether the policy is in force yet (the API server loads it a moment after)."""
    probe = {
        "metadata": {"generateName": "probe-", "labels": {api.LABEL_INSTANCE: "probe"}},
        "data": {},
    }
    try:
        core.create_namespaced_config_map(namespace, probe, dry_run="All")
    except ApiException as exc:
        return exc.status in (400, 403, 422) and "frozen" in (exc.body or "")
    return False


def test_a_refused_configmap_write_holds_the_roll_until_the_cluster_allows_it(
    operator, crds, kube_client, namespace
):
    # Given a Ready serving at version 1
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("mnist")
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    admission = client.AdmissionregistrationV1Api(kube_client)
    template = kube_client.sanitize_for_serialization(
        apps.read_namespaced_deployment("mnist", namespace).spec.template
    )

    # And a cluster that refuses the serving's ConfigMap writes, not its Deployment's
    policy, binding = deny_serving_configmaps(kube_client, namespace)
    try:
        wait_for(lambda: refused(core, namespace), timeout=30, what="the policy in force")

        with ReadyWatch(crds, namespace, "mnist") as watch:
            # When the user moves the serving to version 2
            crds.patch_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                "mnist",
                {"spec": {"model": {"version": 2}}},
            )

            # Then Degraded says which write failed, and why
            def degraded() -> dict:
                return condition(get_serving(crds, namespace, "mnist"), "Degraded")

            said = wait_for(
                lambda: degraded().get("reason") == "ApplyFailed" and degraded(),
                60,
                "Degraded ApplyFailed",
            )
            assert said["status"] == "True"
            assert said["message"].startswith("applying ConfigMap mnist-"), said["message"]
            assert "frozen" in said["message"]
            progressing = condition(get_serving(crds, namespace, "mnist"), "Progressing")
            assert (progressing["status"], progressing["reason"]) == ("False", "ApplyFailed")
            # And the pods do not roll: the template is as it was, naming the old files
            now = apps.read_namespaced_deployment("mnist", namespace)
            assert kube_client.sanitize_for_serialization(now.spec.template) == template
            assert "versions: 1" in config_file(core, apps, namespace, "mnist", "models.config")
            # And through a few retries (every 2 s), the pods of version 1 still serve
            wait_for(lambda: watch.reads >= 25, timeout=30, what="Ready read for 5 s")
        assert watch.seen == [], f"Ready was not True while the old pods served: {watch.seen}"
    finally:
        # When the cluster allows the writes again
        admission.delete_validating_admission_policy_binding(binding)
        admission.delete_validating_admission_policy(policy)

    # Then the roll goes through (the operator retries on its own), onto the new files
    def rolled() -> bool:
        serving = is_ready(crds, namespace, "mnist", 2)
        return bool(serving) and condition(serving, "Progressing")["reason"] == "RolloutComplete"

    wait_for(rolled, timeout=90, what="the roll to generation 2 complete")
    assert condition(get_serving(crds, namespace, "mnist"), "Degraded")["status"] == "False"
    now = apps.read_namespaced_deployment("mnist", namespace).spec.template
    assert set(configmaps_of(now)).isdisjoint(
        n for n in configmaps_of(template) if n.startswith("mnist-")
    )
    assert "versions: 2" in config_file(core, apps, namespace, "mnist", "models.config")
