"""LoggingReady when the operator cannot reach Kafka but the pods can, on the real cluster and
broker: the operator is given a bootstrap address where no broker listens (as its own
NetworkPolicy or credentials would cut it off), while a real sidecar pipeline, publishing its
log status on the serving's pod as it does from inside it (KWOK pods run no code), delivers to
the real broker. LoggingReady is True, saying that the operator cannot reach the brokers while
the pods deliver, and stays so through the operator's retries and the pod's reports."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import prometheus_client
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from kubernetes import client

from modelserving import api
from modelserving_operator.status.conditions import OPERATOR_KAFKA_UNREACHABLE
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
from tests.support.servings import condition, get_serving, serving_manifest
from tests.support.waiting import wait_for, wait_for_async

NOWHERE = "127.0.0.1:9"  # no broker listens: the operator's Kafka is out of its reach


@pytest.fixture
def operator_flags() -> list[str]:
    """The operator's brokers are out of its reach, and it tries them again every second."""
    return ["--kafka-bootstrap-servers", NOWHERE, "--retry-seconds", "1"]


async def make_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def test_logging_ready_follows_the_pods_that_deliver_when_the_operator_cannot_reach_kafka(
    operator, local_env, crds, kube_client, namespace, topic, tmp_path, monkeypatch
):
    core = client.CoreV1Api(kube_client)
    topic = f"{namespace}.{topic}"
    await make_topic(local_env.kafka_bootstrap, topic)

    # Given a serving that logs to a topic the operator cannot reach: it says so
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"kafka": {"topic": topic}}),
    )

    def logging_ready() -> dict:
        return condition(get_serving(crds, namespace, "mnist"), "LoggingReady")

    down = await asyncio.to_thread(
        wait_for,
        lambda: (c := logging_ready()).get("reason") == "KafkaUnreachable" and c,
        60,
        "LoggingReady KafkaUnreachable from the operator's own check",
    )
    assert down["status"] == "False"
    selector = f"{api.LABEL_INSTANCE}=mnist"
    pods = await asyncio.to_thread(
        wait_for,
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items,
        60,
        "the serving's pod",
    )
    pod = pods[0].metadata.name

    # When the pod's sidecar log reaches the real broker, delivers records and says so on its pod
    monkeypatch.setenv("POD_NAME", pod)
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    config = SidecarConfig(
        serving=ServingIdentity(name="mnist", namespace=namespace),
        model=ModelIdentity(name="mnist", version=1, model_id=1),
        auth=AuthConfig(kubeconfig=local_env.kubeconfig),
        logging=replace(
            LoggingConfig(
                mode=LoggingMode.ALL, topic=topic, bootstrap_servers=local_env.kafka_bootstrap
            ),
            spool_dir=str(tmp_path / "spool"),
            drain_timeout_seconds=2,
        ),
    )

    def published() -> dict | None:
        annotations = core.read_namespaced_pod(pod, namespace).metadata.annotations or {}
        return json.loads(annotations.get(ANNOTATION) or "null")

    async with open_inference_log(config, prometheus_client.CollectorRegistry()) as sink:
        now = int(time.time() * 1000)
        for i in range(5):
            sink.submit(Exchange(f"r-{i}", now, 200, b"{}", b"{}", 1, None, None))

        async def delivering() -> dict | None:
            summary = await asyncio.to_thread(published)
            return summary if summary and summary["state"] == "Flowing" else None

        summary = await wait_for_async(delivering, 30, "the pod's log status", interval=0.5)
        assert summary["kafkaReachable"] is True

        # Then LoggingReady is True, saying that the operator cannot reach the brokers
        async def up() -> dict | None:
            c = await asyncio.to_thread(logging_ready)
            return c if c.get("reason") == OPERATOR_KAFKA_UNREACHABLE else None

        ready = await wait_for_async(up, 30, "LoggingReady True from the pods' word")
        assert ready["status"] == "True"
        assert "the pods deliver" in ready["message"]
        assert "the operator cannot reach them" in ready["message"]
        assert NOWHERE in ready["message"]  # where the operator looked
        assert await wait_for_async(
            lambda: asyncio.to_thread(lambda: (published() or {}).get("waitingRecords") == 0),
            30,
            "the records acknowledged",
        )

        # And it stays so while the operator retries (every second) and the pod reports
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            now_said = await asyncio.to_thread(logging_ready)
            assert (now_said["status"], now_said["reason"]) == ("True", OPERATOR_KAFKA_UNREACHABLE)
            assert now_said["lastTransitionTime"] == ready["lastTransitionTime"]
            await asyncio.sleep(0.25)

    # The operator's failure was told once in an Event, not at each retry
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=mnist,reason=KafkaUnreachable"
    ).items
    assert sum(e.count or 1 for e in events) == 1
