"""An operator that may not read Secrets (the chart's rbac.readSecrets false, the operator's
--read-secrets false), run as the chart's ServiceAccount rendered with that value: it serves a
serving whose TF Serving reads a Secret and whose log's Kafka credentials are in Secrets
without a single refused request, carries no digest of Secrets (the roll is off, as the
chart's README says), and LoggingReady says why it did not check the topic."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from modelserving import api
from modelserving_operator.names import SECRETS_CHECKSUM_ANNOTATION
from tests.support.chart_account import operator_kubeconfig as operator_kubeconfig_for
from tests.support.operator_process import COUNTER_NAMESPACE
from tests.support.servings import condition, get_serving, is_ready, serving_manifest
from tests.support.waiting import wait_for

# A Strimzi user's Secret and its cluster's CA Secret, as a platform would name them.
SECURITY = {
    "protocol": "SASL_SSL",
    "ca": {"secretName": "my-cluster-cluster-ca-cert"},
    "sasl": {"mechanism": "SCRAM-SHA-512", "passwordSecret": {"name": "my-user"}},
}


@pytest.fixture
def operator_flags() -> list[str]:
    return ["--read-secrets", "false"]


@pytest.fixture
def operator_kubeconfig(crds, local_env, namespace, tmp_path) -> Path:
    """The chart's ServiceAccount with the rights the chart grants when rbac.readSecrets is
    false: none on Secrets."""
    return operator_kubeconfig_for(
        local_env,
        COUNTER_NAMESPACE,
        namespace,
        tmp_path / "operator.kubeconfig",
        values=["rbac.readSecrets=false"],
    )


def test_an_operator_that_may_not_read_secrets_serves_and_says_what_it_did_not_do(
    operator, crds, kube_client, namespace
):
    # Given a serving whose TF Serving reads S3 credentials from a Secret, and whose inference
    # log connects to Kafka with a Strimzi user's credentials
    env = [
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}},
        }
    ]
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest(
            "mnist",
            server={"env": env},
            logging={"kafka": {"topic": f"{namespace}.mnist", "security": SECURITY}},
        ),
    )

    # Then it becomes Ready
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist"), 60, "the serving Ready")

    # And LoggingReady says the topic was not checked, and why, without a retry loop of 403s
    def logging_ready() -> dict | None:
        found = condition(get_serving(crds, namespace, "mnist"), "LoggingReady")
        return found if found.get("reason") == "TopicUnchecked" else None

    unchecked = wait_for(logging_ready, 30, "LoggingReady TopicUnchecked")
    assert unchecked["status"] == "True"
    assert unchecked["message"] == (
        f"the topic {namespace}.mnist is not checked or created: the operator may not read "
        "Secrets (--read-secrets false, the chart's rbac.readSecrets), and the topic admin's "
        "credentials are in Secrets my-cluster-cluster-ca-cert, my-user "
        "(spec.logging.kafka.security); create the topic yourself. The sidecars use the "
        "Secrets as mounted: a failure of theirs shows here"
    )
    # And its pods still get the Secrets, from the kubelet: they are in the pod template
    apps = client.AppsV1Api(kube_client)
    template = apps.read_namespaced_deployment("mnist", namespace).spec.template
    volumes = {v.name: v for v in template.spec.volumes}
    assert volumes["kafka-sasl"].secret.secret_name == "my-user"
    # And no digest of Secret values: a Secret changed in place rolls nothing (the README says
    # so), and the operator's log said it at start
    assert SECRETS_CHECKSUM_ANNOTATION not in (template.metadata.annotations or {})
    assert "Secrets are not read (--read-secrets false)" in operator.log()
    assert serving["status"]["readyText"] == "1/1"
    # (The operator fixture fails the test on any request the API server refused.)
