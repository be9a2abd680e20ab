"""The inference log against the real broker: records decoded back match the exchanges field for
field, a broker outage or a hung broker during a steady flow loses none, a full spool follows
its policy, Kafka gets few batches at a steady rate and busy runs without delay."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import prometheus_client
import pytest

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import LoggedInference, read_inference_log
from modelserving_sidecar.config import (
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    ServingIdentity,
    SidecarConfig,
    SpoolFullPolicy,
)
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import open_inference_log
from tests.support.exchanges import varied_exchange
from tests.support.waiting import wait_for_async

MODEL = ModelIdentity(name="mnist", version=2, model_id=17)


def sidecar_config(topic: str, bootstrap: str, spool_dir: Path, **logging) -> SidecarConfig:
    settings = LoggingConfig(
        mode=LoggingMode.ALL, topic=topic, bootstrap_servers=bootstrap, spool_dir=str(spool_dir)
    )
    return SidecarConfig(
        serving=ServingIdentity(name="mnist", namespace="demo"),
        model=MODEL,
        logging=replace(settings, **logging),
    )


def exchange(i: int, body_bytes: int = 100) -> Exchange:
    """The i-th of a run whose fields vary with i (status, version, caller, traceparent), with a
    request body of about `body_bytes`: the sizes the linger tests are tuned to."""
    return replace(
        varied_exchange(i),
        request_body=json.dumps({"instances": [[i] * (body_bytes // 3)]}).encode(),
        caller=f"caller-{i % 3}",
    )


async def consume_all(topic: str, bootstrap: str, expected: int, timeout: float) -> list:
    """Read the topic from the beginning until `expected` distinct keys are there."""
    records: list[LoggedInference] = []

    async def have_all() -> bool:
        records[:] = [
            r
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len({r.key for r in records}) >= expected

    await wait_for_async(have_all, timeout, f"{expected} records on {topic}", interval=0.5)
    return records


class SteadyFlow:
    """Exchanges of `body_bytes` submitted at `rate` per second from a task of its own, as a
    busy sidecar does, until stop(); counts the submits made while the sink was refusing."""

    def __init__(self, sink, body_bytes: int, rate: float = 200) -> None:
        self.sink, self.body_bytes, self.rate = sink, body_bytes, rate
        self.sent: list[Exchange] = []
        self.refused = 0
        self._flowing = True
        self._task: asyncio.Task | None = None

    async def _flow(self) -> None:
        while self._flowing:
            if not self.sink.accepting():
                self.refused += 1
            ex = exchange(len(self.sent), body_bytes=self.body_bytes)
            self.sink.submit(ex)
            self.sent.append(ex)
            await asyncio.sleep(1 / self.rate)

    async def stop(self) -> None:
        self._flowing = False
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> SteadyFlow:
        self._task = asyncio.create_task(self._flow())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def metric(registry, name: str, **labels) -> float:
    return registry.get_sample_value(f"modelserving_inference_log_{name}", labels or None) or 0.0


async def wait_for_metric(
    registry, name: str, at_least: float, what: str, timeout: float = 30, **labels
) -> None:
    """Wait until the pipeline's own count `name` reaches `at_least`."""

    async def reached() -> bool:
        return metric(registry, name, **labels) >= at_least

    await wait_for_async(reached, timeout, f"{what} ({name} >= {at_least:.0f})", interval=0.05)


def unacked(registry) -> float:
    """Records in the spool that Kafka has not acknowledged yet."""
    return metric(registry, "records_spooled_total") - metric(registry, "records_produced_total")


def assert_record_matches(logged: LoggedInference, ex: Exchange, mode: LoggingMode) -> None:
    record = logged.record
    assert record.model_id == 17
    assert record.model_name == "mnist"
    assert record.model_version == (ex.model_version if ex.model_version is not None else 2)
    assert record.request_timestamp == ex.received_ms
    assert record.response_http_code == ex.status
    want_request = "" if mode is LoggingMode.PREDICTIONS else ex.request_body.decode()
    want_response = "" if mode is LoggingMode.MODEL_INPUTS else ex.response_body.decode()
    assert record.inference_request == want_request
    assert record.inference_response == want_response
    assert logged.key == ex.request_id
    assert logged.timestamp_ms == ex.received_ms
    assert logged.headers["request-id"] == ex.request_id
    assert logged.headers.get("caller") == ex.caller
    assert logged.headers["model-version"] == str(record.model_version)
    assert logged.headers.get("traceparent") == ex.traceparent
    assert logged.headers["pod"]


@pytest.mark.parametrize(
    "mode", [LoggingMode.ALL, LoggingMode.PREDICTIONS, LoggingMode.MODEL_INPUTS]
)
async def test_records_decoded_back_match_the_exchanges(local_env, topic, tmp_path, mode):
    bootstrap = local_env.kafka_bootstrap
    registry = prometheus_client.CollectorRegistry()
    exchanges = [exchange(i) for i in range(60)]
    async with open_inference_log(
        sidecar_config(topic, bootstrap, tmp_path, mode=mode), registry
    ) as sink:
        assert sink.accepting()
        for ex in exchanges:
            sink.submit(ex)

        async def all_acked() -> bool:
            return metric(registry, "records_produced_total") >= len(exchanges)

        await wait_for_async(all_acked, 60, "Kafka's acks for every record")
        records = await consume_all(topic, bootstrap, len(exchanges), timeout=60)
    by_key = {r.key: r for r in records}
    assert len(records) == len(exchanges)
    for ex in exchanges:
        assert_record_matches(by_key[ex.request_id], ex, mode)
    # In order within the partition, as submitted.
    assert [r.key for r in sorted(records, key=lambda r: r.offset)] == [
        ex.request_id for ex in exchanges
    ]
    assert metric(registry, "records_produced_total") == len(exchanges)
    assert metric(registry, "records_dropped_total", reason="spool_full") == 0


async def test_logs_command_prints_json_lines_filtered_by_model(local_env, topic, tmp_path):
    bootstrap = local_env.kafka_bootstrap
    registry = prometheus_client.CollectorRegistry()
    async with open_inference_log(sidecar_config(topic, bootstrap, tmp_path), registry) as sink:
        for i in range(5):
            sink.submit(exchange(i))

        async def all_acked() -> bool:
            return metric(registry, "records_produced_total") >= 5

        await wait_for_async(all_acked, 60, "Kafka's acks for every record")
    cli = [sys.executable, "-m", "modelserving.cli", "logs", topic, "--bootstrap-servers"]
    out = await asyncio.to_thread(
        subprocess.run,
        [*cli, bootstrap, "--from-beginning", "--model", "mnist"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["key"] for line in lines] == [f"req-{i:06d}" for i in range(5)]
    assert lines[0]["modelName"] == "mnist" and lines[0]["modelId"] == 17
    assert lines[0]["headers"]["caller"] == "caller-0"
    other = await asyncio.to_thread(
        subprocess.run,
        [*cli, bootstrap, "--from-beginning", "--model", "other"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0 and other.stdout == ""


async def test_broker_outage_during_steady_flow_loses_nothing(
    local_env, topic, tmp_path, kafka_broker
):
    bootstrap = kafka_broker.bootstrap
    registry = prometheus_client.CollectorRegistry()
    config = sidecar_config(
        topic, bootstrap, tmp_path, producer_stall_seconds=3.0, send_timeout_seconds=5.0
    )
    async with open_inference_log(config, registry) as sink, SteadyFlow(sink, 1000) as flow:
        sent = flow.sent
        # Given a flow that Kafka acknowledges
        await wait_for_metric(registry, "records_produced_total", 200, "Kafka's acks of the flow")
        # When the broker is down until 600 answered exchanges wait in the spool for it
        outage_start = time.monotonic()
        await asyncio.to_thread(kafka_broker.stop)

        async def held_600() -> bool:
            return unacked(registry) >= 600

        await wait_for_async(held_600, 30, "600 records spooled and not acknowledged by Kafka")
        submitted_while_down = len(sent)
        # And the flow goes on after the broker is back until Kafka acknowledges records again
        await asyncio.to_thread(kafka_broker.start)
        outage = time.monotonic() - outage_start
        acked = metric(registry, "records_produced_total")
        await wait_for_metric(
            registry, "records_produced_total", acked + 1, "Kafka's acks after the outage", 60
        )
        await flow.stop()
        records = await consume_all(topic, bootstrap, len(sent), timeout=120)
    keys = [r.key for r in records]
    delivered = len(set(keys))
    print(
        f"\noutage {outage:.1f} s: sent {len(sent)},"
        f" spooled {metric(registry, 'records_spooled_total'):.0f}"
        f" ({submitted_while_down} submitted when the restart began),"
        f" delivered {delivered}, duplicated {len(keys) - delivered}, lost {len(sent) - delivered},"
        f" replayed {metric(registry, 'records_replayed_total'):.0f}"
    )
    assert flow.refused == 0
    assert delivered == len(sent)
    by_key = {r.key: r for r in records}
    for ex in sent:
        assert_record_matches(by_key[ex.request_id], ex, LoggingMode.ALL)
    assert metric(registry, "records_spooled_total") == len(sent)
    assert (
        sum(
            metric(registry, "records_dropped_total", reason=r)
            for r in ("spool_full", "queue_full", "corrupt")
        )
        == 0
    )


async def test_steady_flow_goes_to_kafka_in_one_send_per_linger(local_env, topic, tmp_path):
    """At a steady rate, records spooled every few milliseconds reach Kafka together, once per
    linger: the producer's round trip is paid per batch, and every record still arrives."""
    bootstrap = local_env.kafka_bootstrap
    registry = prometheus_client.CollectorRegistry()
    config = sidecar_config(topic, bootstrap, tmp_path, linger_ms=100)
    sent: list[Exchange] = []
    async with open_inference_log(config, registry) as sink:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            ex = exchange(len(sent))
            sink.submit(ex)
            sent.append(ex)
            await asyncio.sleep(1 / 500)
        records = await consume_all(topic, bootstrap, len(sent), timeout=60)
        sends = metric(registry, "send_latency_seconds_count")
        writes = metric(registry, "records_spooled_total")
    assert {r.key for r in records} == {ex.request_id for ex in sent}
    assert writes == len(sent)
    # A send per spool write (every few ms) would carry a record or two; one per 100 ms linger
    # carries what arrived in it, some 50 at this rate (fewer on a loaded machine).
    assert len(sent) / sends >= 10, f"{sends:.0f} sends for {len(sent)} records"


async def test_a_busy_flow_is_not_held_back_by_the_linger(local_env, topic, tmp_path):
    """Runs of records big enough to fill a good batch go at once: with a linger of ten
    minutes, which would otherwise hold them (Kafka's producer keeps one batch per partition in
    hand), every record is acknowledged within the test's minute."""
    bootstrap = local_env.kafka_bootstrap
    registry = prometheus_client.CollectorRegistry()
    # Nor does a producer stall, or a send's timeout, end the wait in the meantime.
    config = sidecar_config(
        topic,
        bootstrap,
        tmp_path,
        linger_ms=600_000,
        producer_stall_seconds=600.0,
        send_timeout_seconds=900.0,
    )
    sent: list[Exchange] = []
    async with open_inference_log(config, registry) as sink:
        for _ in range(10):  # ten runs of about 100 KB (records of ~1 KB), 50 ms apart
            for _ in range(100):
                ex = exchange(len(sent), body_bytes=1000)
                sink.submit(ex)
                sent.append(ex)
            await asyncio.sleep(0.05)

        async def all_acked() -> bool:
            return metric(registry, "records_produced_total") >= len(sent)

        await wait_for_async(all_acked, timeout=60, what="every record acked", interval=0.05)


async def test_a_hung_broker_gets_a_new_producer_and_nothing_is_lost(
    local_env, topic, tmp_path, kafka_broker
):
    """A broker that accepts connections and answers nothing (SIGSTOP: a long pause, a wedged
    disk) is a stall, not an outage: after producer_stall_seconds the producer is replaced,
    and once the broker answers again every record is on the topic (at least once)."""
    bootstrap = kafka_broker.bootstrap
    registry = prometheus_client.CollectorRegistry()
    config = sidecar_config(
        topic, bootstrap, tmp_path, producer_stall_seconds=2.0, send_timeout_seconds=60.0
    )
    async with open_inference_log(config, registry) as sink, SteadyFlow(sink, 100) as flow:
        sent = flow.sent
        await wait_for_metric(registry, "records_produced_total", 200, "Kafka's acks of the flow")
        # The broker hangs until records have waited on it for twice the stall limit
        await asyncio.to_thread(kafka_broker.pause)
        try:
            await wait_for_metric(
                registry,
                "oldest_unacked_age_seconds",
                2 * config.logging.producer_stall_seconds,
                "records waiting on the hung broker",
            )
        finally:
            await asyncio.to_thread(kafka_broker.resume)
        # The stalled producer is replaced (the sender sees it once the broker lets go of the
        # send it was in), and the flow goes on until Kafka acknowledges records again
        await wait_for_metric(
            registry, "producer_restarts_total", 1, "a new producer", 60, reason="stalled"
        )
        acked = metric(registry, "records_produced_total")
        await wait_for_metric(
            registry, "records_produced_total", acked + 1, "Kafka's acks after the hang", 60
        )
        await flow.stop()
        records = await consume_all(topic, bootstrap, len(sent), timeout=120)
        stalled = metric(registry, "producer_restarts_total", reason="stalled")
    assert stalled >= 1
    assert {r.key for r in records} == {ex.request_id for ex in sent}
    by_key = {r.key: r for r in records}
    for ex in sent:
        assert_record_matches(by_key[ex.request_id], ex, LoggingMode.ALL)


def closed_port() -> str:
    """An address where no broker listens: Kafka unreachable, as in a network partition."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("policy", [SpoolFullPolicy.REJECT, SpoolFullPolicy.DROP_NEWEST])
async def test_full_spool_follows_its_policy_and_counts(topic, tmp_path, policy):
    registry = prometheus_client.CollectorRegistry()
    config = sidecar_config(
        topic,
        closed_port(),
        tmp_path,
        spool_max_bytes=64 * 1024,
        spool_full_policy=policy,
        drain_timeout_seconds=0.5,
    )
    n = 200
    async with open_inference_log(config, registry) as sink:
        for i in range(n):
            sink.submit(exchange(i, body_bytes=1000))
        dropped = lambda: metric(registry, "records_dropped_total", reason="spool_full")  # noqa: E731
        spooled = lambda: metric(registry, "records_spooled_total")  # noqa: E731
        if policy is SpoolFullPolicy.REJECT:

            async def refusing() -> bool:
                return not sink.accepting()

            await wait_for_async(refusing, 10, "the sink to refuse predictions")
            assert metric(registry, "accepting") == 0
            assert dropped() == 0
        else:

            async def all_accounted() -> bool:
                return spooled() + dropped() == n

            await wait_for_async(all_accounted, 10, "every record spooled or counted dropped")
            assert sink.accepting()
            assert dropped() > 0
        assert 0 < spooled() < n
        assert metric(registry, "spool_bytes") <= 64 * 1024
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 64 * 1024
    os.sync()
