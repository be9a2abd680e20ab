"""Reading the inference log back from a topic: the reader API data teams use to get decoded
records (with Kafka key and headers) in order within each partition, and the one Kafka consumer
every reader of the log uses (`inference_log_consumer`).

Reading, in Python::

    query = InferenceLogQuery(from_beginning=True, model="mnist")
    async for logged in read_inference_log("demo.mnist-inference", "kafka:9092", query):
        print(logged.key, logged.headers, logged.record.response_http_code)

What a read asks for (which records, from where, until when) is an `InferenceLogQuery`
(`inferencelog.query`); the record and its encoding are `inferencelog.record`. A time range is
read from where the broker says it starts (offsets for times), not from the topic's start;
`modelserving logs export` writes one to a file (`inferencelog.export`).

Delivery is at least once: after a sidecar crash, the records Kafka had not acknowledged are on
the topic twice. The query's `dedupe` drops such copies (see `inferencelog.dedupe`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from modelserving.inferencelog.dedupe import DuplicateWindow
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.record import InferenceLogRecord
from modelserving.inferencelog.schema_registry import SchemaRegistry
from modelserving.inferencelog.writer_schemas import WriterSchemas
from modelserving.kafka_security.diagnosis import KafkaRefused, diagnose, problem_of
from modelserving.kafka_security.settings import KafkaSecurity


@dataclass(frozen=True, slots=True)
class LoggedInference:
    """A record as read back from Kafka, with where it was and what the producer attached."""

    record: InferenceLogRecord
    key: str | None  # the request id
    headers: dict[str, str]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the Kafka record's timestamp: when the request arrived

    def to_json_dict(self) -> dict[str, Any]:
        """A flat mapping for JSON: the Avro fields under their schema names, then Kafka's."""
        return {
            **self.record.to_avro(),
            "key": self.key,
            "headers": self.headers,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp_ms,
        }

    def to_json_line(self) -> str:
        """One line of `modelserving logs` (and of a JSON lines export), without its newline."""
        return json.dumps(self.to_json_dict(), ensure_ascii=False)


def _headers(raw: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode("utf-8", errors="replace") for name, value in raw}


class TopicNotFoundError(LookupError):
    """The topic asked for does not exist on the cluster (or the reader may not see it)."""


@dataclass
class ReadProgress:
    """How far a read has got, updated by `read_inference_log` as it reads: `partitions` is set
    once the read knows where it starts (0 until then, and for a topic without partitions); for
    a read with an end, `to_read` is the number of offsets between where it starts and where it
    stops (in all partitions), `read` how many of those it has passed; `duplicates_dropped`
    counts the copies a read with `dedupe` left out."""

    partitions: int = 0
    to_read: int = 0
    read: int = 0
    duplicates_dropped: int = 0


@asynccontextmanager
async def inference_log_consumer(
    bootstrap_servers: str, security: KafkaSecurity | None = None
) -> AsyncIterator[Any]:
    """The Kafka consumer every reader of the log uses (`logs`, `logs export`): the one place
    its connection settings are made. No consumer group: nothing is committed. `security` is
    how to connect to a secured Kafka (default PLAINTEXT); a broker that refuses it raises
    `KafkaRefused`, saying why."""
    from aiokafka import AIOKafkaConsumer

    security = security or KafkaSecurity()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **security.client_options(),
    )
    try:
        try:
            await consumer.start()
        except Exception as exc:
            problem = problem_of(exc) or await diagnose(bootstrap_servers, security)
            if problem is None:
                raise
            raise KafkaRefused(problem) from None
        yield consumer
    finally:
        await consumer.stop()


async def read_inference_log(
    topic: str,
    bootstrap_servers: str,
    query: InferenceLogQuery,
    *,
    security: KafkaSecurity | None = None,
    schema_registry: SchemaRegistry | None = None,
    progress: ReadProgress | None = None,
) -> AsyncIterator[LoggedInference]:
    """Decoded records of a topic that `query` asks for (`InferenceLogQuery()`: every record
    that arrives from now on, up to the end the topic has now), in order within each partition.

    Values are plain Avro or in Confluent's wire format, each as its first byte says; a framed
    value is read with the writer's schema its id names, fetched from `schema_registry` (once
    per id; without a registry, with the seed's schema), into the seed's seven fields
    (`inferencelog.writer_schemas`). Values that do not decode raise `InferenceLogDecodeError`;
    a registry that does not give a schema raises `SchemaRegistryUnavailable`. No consumer group
    is used: nothing is committed. `security` is how to connect to a secured Kafka
    (modelserving.kafka_security.settings; default PLAINTEXT); a broker that refuses it raises
    `KafkaRefused`, saying why. `progress`, when given, is kept up to date as the read goes.
    """
    schemas = WriterSchemas(schema_registry, framed_only=query.confluent)
    window = DuplicateWindow(query.dedupe) if query.dedupe else None
    follow = query.follow
    progress = progress if progress is not None else ReadProgress()
    async with inference_log_consumer(bootstrap_servers, security) as consumer:
        if query.topic_must_exist and topic not in await consumer.topics():
            raise TopicNotFoundError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = await _assigned(consumer, topic, wait=follow)
        if not tps:
            return
        ends = await consumer.end_offsets(tps)
        if query.since_ms is not None:
            await _seek_to_time(consumer, tps, query.since_ms, ends)
        elif query.from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        if query.until_ms is not None:
            stop_ms = query.until_ms + query.allowed_lateness_ms
            ends = await _stops_at_time(consumer, tps, stop_ms, ends)
        starts = {tp: await consumer.position(tp) for tp in tps}
        progress.to_read = sum(max(ends[tp] - starts[tp], 0) for tp in tps)
        progress.partitions = len(tps)
        passed = dict.fromkeys(tps, 0)
        remaining = {tp for tp in tps if starts[tp] < ends[tp]}
        while follow or remaining:
            batches = await consumer.getmany(*tps, timeout_ms=500, max_records=500)
            for tp, messages in batches.items():
                for message in messages:
                    if not follow and message.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
                    now_passed = message.offset + 1 - starts[tp]
                    progress.read += now_passed - passed[tp]
                    passed[tp] = now_passed
                    logged = LoggedInference(
                        record=await schemas.record_of(message.value),
                        key=message.key.decode("utf-8", errors="replace")
                        if message.key is not None
                        else None,
                        headers=_headers(message.headers or ()),
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        timestamp_ms=message.timestamp,
                    )
                    if not query.keeps(logged):
                        continue
                    if window is not None and window.seen(
                        message.key, message.headers or (), message.value
                    ):
                        progress.duplicates_dropped = window.dropped
                        continue
                    yield logged
            if not follow:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                for tp in tps:
                    if tp not in remaining:
                        # Done: what a partition holds past its end is not fetched.
                        consumer.pause(tp)
                        done = max(ends[tp] - starts[tp], 0)
                        progress.read += done - passed[tp]
                        passed[tp] = done


async def _seek_to_time(consumer: Any, tps: list[Any], since_ms: int, ends: Any) -> None:
    """Each partition at its first record stamped `since_ms` or later (at its end if none)."""
    found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    for tp in tps:
        consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])


async def _stops_at_time(consumer: Any, tps: list[Any], stop_ms: int, ends: Any) -> Any:
    """Where each partition's read stops: its first record stamped `stop_ms` or later, or the
    end it had when the read started, whichever comes first."""
    found = await consumer.offsets_for_times(dict.fromkeys(tps, stop_ms))
    return {
        tp: min(ends[tp], found[tp].offset) if found.get(tp) is not None else ends[tp] for tp in tps
    }


async def _assigned(consumer: Any, topic: str, wait: bool) -> list[Any]:
    """Subscribe to the topic and wait for its partitions (a missing topic has none)."""
    consumer.subscribe([topic])
    deadline = asyncio.get_running_loop().time() + 3.0
    while not consumer.assignment():
        if not wait and asyncio.get_running_loop().time() > deadline:
            return []
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())
