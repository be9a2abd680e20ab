"""`modelserving logs export` against the real broker, of records the sidecar's own inference log
pipeline produced: 10,000 records to Parquet and to JSON lines, read back by other readers
(pyarrow for the Parquet arro3 wrote, json for the lines) and compared field by field with the
exchanges; a time range gives exactly its records, late arrivals within the allowed lateness
included, and is read from where the broker says it starts; filters; errors a user can act on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pyarrow.parquet
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import ReadProgress, read_inference_log
from modelserving.inferencelog.record import PROTOCOL_REST
from modelserving_sidecar.config import (
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    ServingIdentity,
    SidecarConfig,
)
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import InferenceLogPipeline, open_inference_log
from modelserving_sidecar.routing.split import STABLE
from tests.support.exchanges import varied_exchange
from tests.support.waiting import wait_for_async

COUNT = 10_000
PARTITIONS = 3
MODEL = ModelIdentity(name="mnist", version=2, model_id=17)
STEP_MS = 10  # record i was received at T0 + i * STEP_MS
# The range the time-range tests export: records 3000 to 5999 as they were received in order...
RANGE = (3000, 6000)
# ...and LATE records received inside it that reached Kafka only after record 6500, as records
# re-sent after a sidecar crash do.
LATE = 5
LATE_AFTER = 6500


@dataclass(frozen=True)
class Produced:
    """The topic as the pipeline filled it, and what each record should say."""

    topic: str
    bootstrap: str
    t0: int
    pod: str
    exchanges: dict[str, Exchange]  # by request id

    def expected(self, request_id: str) -> dict[str, Any]:
        """The JSON line fields the record of this request must have (topic placement aside)."""
        ex = self.exchanges[request_id]
        version = ex.model_version if ex.model_version is not None else MODEL.version
        headers = {
            "request-id": request_id,
            "model-version": str(version),
            "pod": self.pod,
            "role": ex.role or STABLE,
            "protocol": PROTOCOL_REST,
        }
        if ex.caller is not None:
            headers["caller"] = ex.caller
        if ex.traceparent is not None:
            headers["traceparent"] = ex.traceparent
        return {
            "modelId": MODEL.model_id,
            "modelName": MODEL.name,
            "modelVersion": version,
            "requestTimestamp": ex.received_ms,
            "responseHttpCode": ex.status,
            "inferenceRequest": ex.request_body.decode(),
            "inferenceResponse": ex.response_body.decode(),
            "key": request_id,
            "headers": headers,
            "topic": self.topic,
            "timestamp": ex.received_ms,
        }

    def ids_received(self, since_ms: int, until_ms: int) -> set[str]:
        return {rid for rid, ex in self.exchanges.items() if since_ms <= ex.received_ms < until_ms}

    def at(self, i: int) -> int:
        return self.t0 + i * STEP_MS


async def create_topic(topic: str, bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def submit_all(sink: InferenceLogPipeline, exchanges: list[Exchange]) -> None:
    """Submit as a busy sidecar does, waiting whenever the log says it can take no more."""
    for n, ex in enumerate(exchanges):
        if not sink.accepting():

            async def accepting() -> bool:
                return sink.accepting()

            await wait_for_async(accepting, 60, "the inference log to accept again", 0.01)
        sink.submit(ex)
        if n % 200 == 0:
            await asyncio.sleep(0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def produced(local_env, tmp_path_factory) -> AsyncIterator[Produced]:
    """10,000 records through the sidecar's pipeline, received 10 ms apart an hour ago, and 5
    late ones: received inside RANGE, sent after record 6500."""
    bootstrap = local_env.kafka_bootstrap
    topic = f"export-{uuid.uuid4().hex[:8]}"
    await create_topic(topic, bootstrap)
    t0 = (int(time.time() * 1000) - 3_600_000) // 1000 * 1000
    in_order = [
        varied_exchange(i, request_id=f"req-{i:05d}", received_ms=t0 + i * STEP_MS)
        for i in range(COUNT)
    ]
    late = [
        varied_exchange(
            COUNT + j, request_id=f"late-{j}", received_ms=t0 + (RANGE[0] + 1000 + j) * STEP_MS + 3
        )
        for j in range(LATE)
    ]
    order = [*in_order[: LATE_AFTER + 1], *late, *in_order[LATE_AFTER + 1 :]]
    config = SidecarConfig(
        serving=ServingIdentity(name="mnist", namespace="demo"),
        model=MODEL,
        logging=LoggingConfig(
            mode=LoggingMode.ALL,
            topic=topic,
            bootstrap_servers=bootstrap,
            spool_dir=str(tmp_path_factory.mktemp("spool")),
        ),
    )
    registry = prometheus_client.CollectorRegistry()
    async with open_inference_log(config, registry) as sink:
        assert isinstance(sink, InferenceLogPipeline)
        await submit_all(sink, order)

        async def all_acked() -> bool:
            produced = "modelserving_inference_log_records_produced_total"
            return (registry.get_sample_value(produced) or 0) >= len(order)

        await wait_for_async(all_acked, 120, "Kafka's acks for every record", 0.1)
        pod = sink.pod
    yield Produced(topic, bootstrap, t0, pod, {ex.request_id: ex for ex in order})


async def export(produced: Produced, output: Path, *flags: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "modelserving.cli", "logs", "export", produced.topic]
    return await asyncio.to_thread(
        subprocess.run,
        [*argv, "-o", str(output), "--bootstrap-servers", produced.bootstrap, *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )


def parquet_rows(path: Path) -> list[dict[str, Any]]:
    """The rows as pyarrow reads them, in a JSON line's terms (milliseconds, header dict)."""
    rows = pyarrow.parquet.read_table(path).to_pylist()
    for row in rows:
        for name in ("requestTimestamp", "timestamp"):
            row[name] = round(row[name].timestamp() * 1000)
        row["headers"] = {h["key"]: h["value"] for h in row["headers"]}
    return rows


def json_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def assert_exactly(produced: Produced, rows: list[dict[str, Any]], ids: set[str]) -> None:
    """Every record of `ids` once, field by field as produced, in each partition's order."""
    assert sorted(row["key"] for row in rows) == sorted(ids)
    for row in rows:
        placement = {name: row.pop(name) for name in ("partition", "offset")}
        assert row == produced.expected(row["key"])
        row.update(placement)
    for partition in range(PARTITIONS):
        offsets = [row["offset"] for row in rows if row["partition"] == partition]
        assert offsets == sorted(offsets)


async def test_10000_records_to_parquet_and_json_lines_read_back_field_by_field(produced, tmp_path):
    # Given 10,005 records the sidecar's pipeline put on a topic of 3 partitions
    everything = set(produced.exchanges)
    for name, read_back in (("all.parquet", parquet_rows), ("all.jsonl", json_rows)):
        # When a data team exports the whole topic
        out = await export(produced, tmp_path / name)

        # Then the file holds every record once, each field as produced, and nothing else
        assert out.returncode == 0, out.stderr
        assert out.stderr == ""  # not a terminal: no progress lines
        assert_exactly(produced, read_back(tmp_path / name), everything)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.jsonl", "all.parquet"]
    schema = pyarrow.parquet.read_schema(tmp_path / "all.parquet")
    assert str(schema.field("requestTimestamp").type) == "timestamp[ms, tz=UTC]"
    assert str(schema.field("modelVersion").type) == "int32"


@pytest.mark.parametrize("export_format", ["parquet", "jsonl"])
async def test_a_time_range_exports_exactly_its_records(produced, tmp_path, export_format):
    # Given records received 10 ms apart, and 5 inside the range that reached Kafka late
    since, until = produced.at(RANGE[0]), produced.at(RANGE[1])
    output = tmp_path / f"range.{export_format}"

    # When the range is exported, with ISO 8601 times as a user writes them
    out = await export(
        produced, output, "--since", iso(since), "--until", iso(until), "--allowed-lateness", "10s"
    )

    # Then it holds the records received in [since, until): none before, none after, none missing
    assert out.returncode == 0, out.stderr
    rows = parquet_rows(output) if export_format == "parquet" else json_rows(output)
    ids = produced.ids_received(since, until)
    assert len(ids) == RANGE[1] - RANGE[0] + LATE
    assert_exactly(produced, rows, ids)


async def test_a_time_range_is_read_from_where_the_broker_says_it_starts(produced):
    """Offsets for times: the read starts at the range's first record in each partition and
    stops at the first record stamped after the allowed lateness, not at the topic's ends."""
    since, until = produced.at(RANGE[0]), produced.at(RANGE[1])
    progress = ReadProgress()
    keys = [
        r.key
        async for r in read_inference_log(
            produced.topic,
            produced.bootstrap,
            InferenceLogQuery(since_ms=since, until_ms=until, allowed_lateness_ms=10_000),
            progress=progress,
        )
    ]
    # Read: records received from `since` to `until` + 10 s (1,000 more), and the late ones.
    read_range = produced.ids_received(since, produced.at(RANGE[1] + 1000))
    assert progress.partitions == PARTITIONS
    assert progress.to_read == progress.read == len(read_range) == 4000 + LATE
    assert sorted(keys) == sorted(produced.ids_received(since, until))


async def test_filters_keep_only_what_is_asked(produced, tmp_path):
    output = tmp_path / "filtered.jsonl"
    until = produced.at(2000)
    out = await export(
        produced,
        output,
        "--until",
        str(until),
        "--model",
        "mnist",
        "--model-version",
        "3",
        "--status",
        "4xx",
        "--header",
        "caller=team-2",
    )
    assert out.returncode == 0, out.stderr
    want = {
        rid
        for rid in produced.ids_received(0, until)
        if (ex := produced.exchanges[rid]).model_version == 3
        and 400 <= ex.status < 500
        and ex.caller == "team-2"
    }
    assert want  # the filters leave some records, and only those
    assert_exactly(produced, json_rows(output), want)

    deduped = await export(produced, tmp_path / "deduped.jsonl", "--until", str(until), "--dedupe")
    assert deduped.returncode == 0, deduped.stderr
    assert deduped.stderr == "--dedupe: 0 duplicate records dropped (window size 100000)\n"
    assert_exactly(produced, json_rows(tmp_path / "deduped.jsonl"), produced.ids_received(0, until))

    other_model = tmp_path / "none.parquet"
    out = await export(produced, other_model, "--until", str(until), "--model", "resnet")
    assert out.returncode == 0, out.stderr
    assert pyarrow.parquet.read_table(other_model).num_rows == 0


async def test_an_unknown_topic_is_a_clear_error_and_leaves_no_file(local_env, tmp_path):
    missing = Produced(f"missing-{uuid.uuid4().hex[:8]}", local_env.kafka_bootstrap, 0, "", {})
    out = await export(missing, tmp_path / "x.parquet", "--since", "1h")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"modelserving logs export: error: topic {missing.topic!r} does not exist on "
        f"{local_env.kafka_bootstrap}"
    )
    assert list(tmp_path.iterdir()) == []
    # And asking did not create it (the broker creates topics on first use).
    again = await export(missing, tmp_path / "x.jsonl")
    assert again.returncode == 1 and "does not exist" in again.stderr


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
