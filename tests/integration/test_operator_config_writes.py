"""A serving's ConfigMap write refused by the cluster (here a ValidatingAdmissionPolicy, as a
webhook or a quota would) while its Deployment's would be allowed: the pods do not roll onto
files that were never written; the status says which write failed; once the cluster allows
it, the roll goes through."""

from __future__ import annotations

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

        # When the user moves the serving to version 2
        crds.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist",
            {"spec": {"model": {"version": 2}}},
        )  # fmt: skip

        # Then the status says which write failed, and why
        def ready() -> dict:
            return condition(get_serving(crds, namespace, "mnist"), "Ready")

        said = wait_for(
            lambda: ready().get("reason") == "ApplyFailed" and ready(), 60, "Ready ApplyFailed"
        )
        assert said["status"] == "False"
        assert said["message"].startswith("applying ConfigMap mnist-"), said["message"]
        assert "frozen" in said["message"]
        degraded = condition(get_serving(crds, namespace, "mnist"), "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
        # And the pods do not roll: the template is as it was, naming the old files
        now = apps.read_namespaced_deployment("mnist", namespace)
        assert kube_client.sanitize_for_serialization(now.spec.template) == template
        assert "versions: 1" in config_file(core, apps, namespace, "mnist", "models.config")
    finally:
        # When the cluster allows the writes again
        admission.delete_validating_admission_policy_binding(binding)
        admission.delete_validating_admission_policy(policy)

    # Then the roll goes through (the operator retries on its own), onto the new files
    wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=90, what="Ready at gen 2")
    now = apps.read_namespaced_deployment("mnist", namespace).spec.template
    assert set(configmaps_of(now)).isdisjoint(
        n for n in configmaps_of(template) if n.startswith("mnist-")
    )
    assert "versions: 2" in config_file(core, apps, namespace, "mnist", "models.config")
