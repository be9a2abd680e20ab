"""Objects deleted while the operator's watch was away: the operator stopped (SIGSTOP), the API
server restarted (the operator's own, a second one of the cluster: the watches cut, their
place unknown to the new one: 410 Gone), then a
serving's Service and its reporting pod deleted; kopf lists everything anew, telling no DELETED.
The operator's caches drop what the listing no longer returns: the Service is made again and the
gone pod's model report no longer counts."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from kubernetes import client

from modelserving import api
from tests.support.ports import free_port
from tests.support.prometheus import scrape, value
from tests.support.servings import condition, get_serving, is_ready, serving_manifest
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def operator_flags(metrics_port: int) -> list[str]:
    return ["--metrics-port", str(metrics_port)]


def test_a_service_and_a_pod_deleted_while_the_watch_was_away_are_not_kept_in_the_cache(
    operator, crds, kube_client, local_env, namespace, metrics_port, spare_apiserver
):
    core = client.CoreV1Api(kube_client)
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def model_ready() -> dict:
        return condition(get_serving(crds, namespace, "mnist"), "ModelReady")

    # Given a Ready serving whose pod reported its model AVAILABLE
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"enabled": False}),
    )
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist"), 60, "the serving Ready")
    selector = f"{api.LABEL_INSTANCE}=mnist"
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items, 60, "a pod"
    )
    reporting = pods[0].metadata.name
    report = {
        "server": {"reachable": True, "error": ""},
        "auth": {"ready": True, "error": ""},
        "versions": [
            {
                "version": 1,
                "state": "AVAILABLE",
                "errorCode": "OK",
                "errorMessage": "",
                "served": 10,
            }
        ],
    }
    reported = {"metadata": {"annotations": {api.MODEL_REPORT_ANNOTATION: json.dumps(report)}}}
    core.patch_namespaced_pod_status(reporting, namespace, reported)  # as the sidecar writes it
    wait_for(lambda: model_ready().get("status") == "True", 30, "ModelReady from the report")
    restarts_before = value(scrape(url), "modelserving_operator_watch_restarts_total")

    # When, while the operator is stopped, the API server restarts (the operator's watches are
    # cut, and the new API server does not know their place), and the Service and the reporting
    # pod are deleted (its ReplicaSet makes another, which has reported nothing)
    assert operator.proc is not None
    os.kill(operator.proc.pid, signal.SIGSTOP)
    try:
        killed = time.time()
        spare_apiserver.restart()
        operator.excuse_refusals(killed, time.time())
        local_env.kubectl("delete", "service", "mnist", "-n", namespace)
        local_env.kubectl(
            "delete", "pod", reporting, "-n", namespace, "--grace-period=0", "--force"
        )
        wait_for(
            lambda: (
                {
                    p.metadata.name
                    for p in core.list_namespaced_pod(namespace, label_selector=selector).items
                }
                - {reporting}
            ),
            60,
            "the ReplicaSet's new pod",
        )
    finally:
        os.kill(operator.proc.pid, signal.SIGCONT)

    # Then the operator lists anew, makes the Service again, owned by the serving
    uid = serving["metadata"]["uid"]

    def service_owner() -> str | None:
        try:
            service = core.read_namespaced_service("mnist", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return next((o.uid for o in service.metadata.owner_references or []), None)

    assert wait_for(service_owner, 90, "the Service made again") == uid
    # ... and the gone pod's report no longer holds ModelReady: the new pod has reported nothing
    waiting = wait_for(
        lambda: (c := model_ready()).get("status") == "False" and c, 60, "ModelReady False"
    )
    assert waiting["reason"] == "AwaitingReport"
    # ... from a fresh listing (the watches' place was gone), not from DELETED events
    assert value(scrape(url), "modelserving_operator_watch_restarts_total") > restarts_before
    assert operator.starts == 1 and operator.proc.poll() is None
