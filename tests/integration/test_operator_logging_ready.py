"""The operator's side of the inference log's settings and health, on the real cluster: its
--log-* defaults reach the sidecar config where the spec is silent, the spec wins where it
speaks, and a pod's log-status annotation (written through the API as the sidecar writes it;
KWOK pods run no code) turns LoggingReady False with the age of the oldest spooled record."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client

from modelserving import api
from modelserving_sidecar.log.status import ANNOTATION
from tests.support.servings import condition, config_file, get_serving, serving_manifest
from tests.support.waiting import wait_for

DEFAULT_FLAGS = [
    "--log-mode",
    "ERRORS",
    "--log-success-sample-rate",
    "0.5",
    "--log-max-payload-bytes",
    "4096",
    "--log-redact",
    '[{"path": "instances[*].email", "action": "hash"}]',
]


@pytest.fixture
def operator_flags() -> list[str]:
    """The operator of these tests runs with --log-* defaults of its own."""
    return DEFAULT_FLAGS


# One operator, with DEFAULT_FLAGS, for the module's tests.
SHARED_OPERATOR = DEFAULT_FLAGS


def sidecar_logging(core, namespace: str, name: str) -> dict | None:
    text = config_file(core, client.AppsV1Api(core.api_client), namespace, name, "sidecar.yaml")
    return None if text is None else yaml.safe_load(text)["logging"]


def test_operator_defaults_apply_where_the_spec_is_silent_and_the_spec_wins_where_it_speaks(
    operator, crds, kube_client, namespace, topic
):
    core = client.CoreV1Api(kube_client)
    kafka = {"kafka": {"topic": f"{namespace}.{topic}"}}
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("silent", logging=kafka)
    )
    speaks = {
        **kafka,
        "mode": "ALL",
        "sampling": {"successRate": 0.1},
        "redact": [],
        "payloads": {"oversize": "digest"},
    }
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("speaks", logging=speaks)
    )

    silent = wait_for(lambda: sidecar_logging(core, namespace, "silent"), 60, "silent's config")
    spoken = wait_for(lambda: sidecar_logging(core, namespace, "speaks"), 60, "speaks' config")

    assert silent["mode"] == "ERRORS"
    assert (silent["successSampleRate"], silent["errorSampleRate"]) == (0.5, 1.0)
    assert (silent["maxPayloadBytes"], silent["oversizePayload"]) == (4096, "truncate")
    assert silent["redact"] == [{"path": "instances[*].email", "action": "hash", "payload": "both"}]
    assert spoken["mode"] == "ALL"
    assert (spoken["successSampleRate"], spoken["errorSampleRate"]) == (0.1, 1.0)
    assert (spoken["maxPayloadBytes"], spoken["oversizePayload"]) == (4096, "digest")
    assert spoken["redact"] == []


def test_a_pods_log_status_makes_logging_ready_false_with_the_oldest_records_age(
    operator, crds, kube_client, namespace, topic
):
    core = client.CoreV1Api(kube_client)
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"kafka": {"topic": f"{namespace}.{topic}"}}),
    )

    def logging_ready() -> dict:
        return condition(get_serving(crds, namespace, "mnist"), "LoggingReady")

    wait_for(lambda: logging_ready().get("reason") == "TopicReady", 60, "LoggingReady TopicReady")
    binding = client.RbacAuthorizationV1Api(kube_client).read_namespaced_role_binding(
        "mnist-sidecar-log-status", namespace
    )
    assert binding.role_ref.name == "modelserving-sidecar-log-status"
    assert binding.subjects[0].name == "mnist-sidecar"
    selector = f"{api.LABEL_INSTANCE}=mnist"
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items, 60, "a pod"
    )
    pod = pods[0].metadata.name

    def publish(summary: dict) -> None:  # what the sidecar's publisher writes
        patch = {"metadata": {"annotations": {ANNOTATION: json.dumps(summary)}}}
        core.patch_namespaced_pod_status(pod, namespace, patch)

    publish(
        {
            "state": "KafkaUnreachable",
            "spoolPercent": 3,
            "waitingRecords": 1200,
            "oldestRecordAgeSeconds": 42,
            "kafkaReachable": False,
        }
    )
    down = wait_for(
        lambda: (c := logging_ready()).get("status") == "False" and c, 30, "LoggingReady False"
    )
    assert down["reason"] == "KafkaUnreachable"
    assert "1200 records" in down["message"] and "42 s" in down["message"]
    assert pod in down["message"]

    publish(
        {
            "state": "Flowing",
            "spoolPercent": 0,
            "waitingRecords": 0,
            "oldestRecordAgeSeconds": 0,
            "kafkaReachable": True,
        }
    )
    wait_for(lambda: logging_ready().get("status") == "True", 30, "LoggingReady True again")
