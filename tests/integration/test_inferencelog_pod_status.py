"""The sidecar's side of LoggingReady, on the real API server: with the broker unreachable, the
running pipeline's publisher writes its summary (state, records waiting, oldest record's age)
to the annotation of a real Pod, through pods/status, as it does from inside its pod."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import prometheus_client
from kubernetes import client

from modelserving_sidecar.config import (
    AuthConfig,
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    ServingIdentity,
    SidecarConfig,
)
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import open_inference_log
from modelserving_sidecar.log.status import ANNOTATION
from tests.support.waiting import wait_for_async


async def test_the_sidecar_publishes_an_unreachable_broker_and_its_backlog_on_its_pod(
    local_env, kube_client, namespace, topic, tmp_path, monkeypatch
):
    core = client.CoreV1Api(kube_client)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="serving-pod"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    core.create_namespaced_pod(namespace, pod)
    config = SidecarConfig(
        serving=ServingIdentity(name="hpt", namespace=namespace),
        model=ModelIdentity(name="hpt", version=1, model_id=1),
        auth=AuthConfig(kubeconfig=local_env.kubeconfig),
        logging=replace(
            LoggingConfig(mode=LoggingMode.ALL, topic=topic, bootstrap_servers="127.0.0.1:9"),
            spool_dir=str(tmp_path / "spool"),
            drain_timeout_seconds=0.5,
        ),
    )

    def annotation() -> dict | None:
        annotations = core.read_namespaced_pod("serving-pod", namespace).metadata.annotations
        return json.loads((annotations or {}).get(ANNOTATION) or "null")

    # Given 20 answered exchanges in the spool that the broker never got (a sidecar outside a
    # pod, which publishes nothing, took them; its spool outlives it)
    async with open_inference_log(config, prometheus_client.CollectorRegistry()) as sink:
        for i in range(20):
            sink.submit(
                Exchange(f"r-{i}", int(time.time() * 1000) - 3000, 200, b"{}", b"{}", 1, None, None)
            )
    assert annotation() is None

    # When the sidecar runs in its pod on that spool, the broker still unreachable
    monkeypatch.setenv("POD_NAME", "serving-pod")
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    async with open_inference_log(config, prometheus_client.CollectorRegistry()):
        # Then its first summary on the pod says so, with the backlog
        async def published() -> dict | None:
            return annotation()

        summary = await wait_for_async(published, 30, "the log status on the pod", interval=0.5)

    assert summary["state"] == "KafkaUnreachable"
    assert summary["kafkaReachable"] is False
    assert summary["waitingRecords"] == 20
    assert summary["oldestRecordAgeSeconds"] >= 0
    assert summary["spoolPercent"] == 0
