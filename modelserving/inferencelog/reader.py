"""The inference log's record: the seed's `inferencelog` Avro schema, its encoding, and the
reader API data teams use to get decoded records (with Kafka key and headers) back from a topic.

On the topic each value is plain Avro binary of `SCHEMA` with no schema-registry prefix, as
Hopsworks wrote it; Confluent framing (magic byte and 4-byte schema id) is an option of the
writer and the reader. Each Kafka record also carries a key (the request id) and the headers
named `HEADER_*` below; the Avro value stays the seed's seven fields.

Reading, in Python::

    async for logged in read_inference_log("demo.mnist-inference", "kafka:9092",
                                           from_beginning=True, model="mnist"):
        print(logged.key, logged.headers, logged.record.response_http_code)

A time range (`since_ms=`, `until_ms=`, by requestTimestamp) is read from where the broker says
it starts (offsets for times), not from the topic's start; `modelserving logs export` writes
one to a file (`inferencelog_export`). Every reader gets its consumer from
`inference_log_consumer`, the one place its connection settings are made.

Delivery is at least once: after a sidecar crash, the records Kafka had not acknowledged are on
the topic twice. `dedupe=` drops such copies (see `inferencelog_dedupe`).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import AsyncIterator, Container, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import fastavro

from modelserving.inferencelog.dedupe import DuplicateWindow
from modelserving.kafka_security.diagnosis import KafkaRefused, diagnose, problem_of
from modelserving.kafka_security.settings import KafkaSecurity

# The seed's schema, field for field: the one source of the record's shape.
SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "modelId", "type": "int"},
        {"name": "modelName", "type": "string"},
        {"name": "modelVersion", "type": "int"},
        {"name": "requestTimestamp", "type": "long"},
        {"name": "responseHttpCode", "type": "int"},
        {"name": "inferenceRequest", "type": "string"},
        {"name": "inferenceResponse", "type": "string"},
    ],
    "name": "inferencelog",
    "type": "record",
}
# Parsed once: fastavro re-parses a plain dict on every call.
PARSED_SCHEMA = fastavro.parse_schema(SCHEMA)

# Kafka header names each record carries (values are UTF-8).
HEADER_REQUEST_ID = "request-id"
HEADER_TRACEPARENT = "traceparent"
HEADER_CALLER = "caller"
HEADER_MODEL_VERSION = "model-version"
HEADER_POD = "pod"
# What the answering version was to the serving: `stable`, `canary` or another label of it, or
# `shadow` for the copy of a request a shadow version answered (same key as the main record).
HEADER_ROLE = "role"
# Present only when a payload was changed: which one and how, e.g. `request=redacted+cut` or
# `request=redacted,response=digest` (marks: redacted, cut, digest, dropped, unencodable).
HEADER_PAYLOAD = "payload"
# The protocol the call came in by: `rest` (TF Serving's REST API and the Hopsworks paths) or
# `grpc` (TF Serving's gRPC API; the payloads are written as the REST JSON of the same tensors).
HEADER_PROTOCOL = "protocol"
PROTOCOL_REST = "rest"
PROTOCOL_GRPC = "grpc"

_CONFLUENT_MAGIC = 0
_CONFLUENT_PREFIX = struct.Struct(">bI")


class InferenceLogDecodeError(ValueError):
    """A Kafka value is not an `inferencelog` record in the expected framing."""


@dataclass(frozen=True, slots=True)
class InferenceLogRecord:
    """One `inferencelog` record: what a serving answered to one request."""

    model_id: int
    model_name: str
    model_version: int
    request_timestamp: int  # ms since the epoch when the request arrived
    response_http_code: int
    inference_request: str  # empty in PREDICTIONS mode
    inference_response: str  # empty in MODEL_INPUTS mode

    def to_avro(self) -> dict[str, Any]:
        """The record as the schema's field names, for fastavro."""
        return {
            "modelId": self.model_id,
            "modelName": self.model_name,
            "modelVersion": self.model_version,
            "requestTimestamp": self.request_timestamp,
            "responseHttpCode": self.response_http_code,
            "inferenceRequest": self.inference_request,
            "inferenceResponse": self.inference_response,
        }

    @classmethod
    def from_avro(cls, data: Mapping[str, Any]) -> InferenceLogRecord:
        return cls(
            model_id=data["modelId"],
            model_name=data["modelName"],
            model_version=data["modelVersion"],
            request_timestamp=data["requestTimestamp"],
            response_http_code=data["responseHttpCode"],
            inference_request=data["inferenceRequest"],
            inference_response=data["inferenceResponse"],
        )


def encode_record(record: InferenceLogRecord, confluent_schema_id: int | None = None) -> bytes:
    """Avro binary of one record; with a schema id, prefixed with Confluent's wire framing."""
    out = io.BytesIO()
    if confluent_schema_id is not None:
        out.write(_CONFLUENT_PREFIX.pack(_CONFLUENT_MAGIC, confluent_schema_id))
    fastavro.schemaless_writer(out, PARSED_SCHEMA, record.to_avro())
    return out.getvalue()


def _varint(n: int) -> bytes:
    """Avro's variable-length encoding of a zigzagged (non-negative) number."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]


def _avro_long(n: int) -> bytes:
    """An Avro int or long (zigzag, then varint): the same bytes for both in int's range."""
    return _varint((n << 1) ^ (n >> 63))


class InferenceLogEncoder:
    """Avro binary of one model's records, byte for byte what `encode_record` writes, with what
    is the same for every record (modelId, modelName, the framing) encoded once.

    The payloads come as UTF-8 bytes (the pipeline has them so), which Avro writes as they are.
    """

    _CACHE_LIMIT = 1024  # model versions and HTTP codes seen: a handful in practice

    def __init__(
        self, model_id: int, model_name: str, confluent_schema_id: int | None = None
    ) -> None:
        name = model_name.encode()
        prefix = b""
        if confluent_schema_id is not None:
            prefix = _CONFLUENT_PREFIX.pack(_CONFLUENT_MAGIC, confluent_schema_id)
        self._prefix = prefix + _avro_long(model_id) + _varint(len(name) << 1) + name
        self._ints: dict[int, bytes] = {}
        self._last_timestamp: tuple[int | None, bytes] = (None, b"")  # none encoded yet

    def _int(self, n: int) -> bytes:
        encoded = self._ints.get(n)
        if encoded is None:
            encoded = _avro_long(n)
            if len(self._ints) >= self._CACHE_LIMIT:
                self._ints.clear()
            self._ints[n] = encoded
        return encoded

    def encode(
        self,
        model_version: int,
        request_timestamp: int,
        response_http_code: int,
        inference_request: bytes,
        inference_response: bytes,
    ) -> bytes:
        """The Avro value of one record; the two payloads as UTF-8 bytes."""
        last_ts, ts = self._last_timestamp
        if request_timestamp != last_ts:  # requests in the same millisecond share it
            ts = _avro_long(request_timestamp)
            self._last_timestamp = (request_timestamp, ts)
        return b"".join(
            (
                self._prefix,
                self._int(model_version),
                ts,
                self._int(response_http_code),
                _varint(len(inference_request) << 1),
                inference_request,
                _varint(len(inference_response) << 1),
                inference_response,
            )
        )


def decode_record(value: bytes, confluent: bool = False) -> InferenceLogRecord:
    """The record in one Kafka value (plain Avro, or Confluent-framed when `confluent`)."""
    buf = io.BytesIO(value)
    if confluent:
        prefix = buf.read(_CONFLUENT_PREFIX.size)
        if len(prefix) != _CONFLUENT_PREFIX.size or prefix[0] != _CONFLUENT_MAGIC:
            raise InferenceLogDecodeError("value has no Confluent schema-registry prefix")
    try:
        data = fastavro.schemaless_reader(buf, PARSED_SCHEMA, None)
    except (EOFError, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise InferenceLogDecodeError(f"value is not an inferencelog record: {exc}") from None
    if buf.tell() != len(value):
        raise InferenceLogDecodeError("value has bytes after the inferencelog record")
    if not isinstance(data, dict):
        raise InferenceLogDecodeError("value is not an inferencelog record")
    return InferenceLogRecord.from_avro(data)


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
    stops (in all partitions), `read` how many of those it has passed."""

    partitions: int = 0
    to_read: int = 0
    read: int = 0


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
    *,
    from_beginning: bool = False,
    follow: bool = False,
    model: str | None = None,
    confluent: bool = False,
    where: Mapping[str, str] | None = None,
    contains: Mapping[str, str] | None = None,
    key: str | None = None,
    dedupe: int | DuplicateWindow = 0,
    security: KafkaSecurity | None = None,
    model_version: int | None = None,
    status_codes: Container[int] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    allowed_lateness_ms: int = 0,
    topic_must_exist: bool = False,
    progress: ReadProgress | None = None,
) -> AsyncIterator[LoggedInference]:
    """Decoded records of a topic, in order within each partition.

    Reads from the end (only what arrives from now on) unless `from_beginning`; without
    `follow` it stops once it has read up to the end the topic had when it started. `model`
    keeps only one model's records, `model_version` one version's, `status_codes` those whose
    responseHttpCode is in it; `key` only the record(s) of one request id; `where` keeps
    records whose headers have the given values (for example `{HEADER_CALLER: "team-a"}`),
    `contains` those whose headers hold the given text (`{HEADER_PAYLOAD: "cut"}`; an empty
    text asks only that the header be there). Values that do not decode raise
    `InferenceLogDecodeError`. No consumer group is used: nothing is committed.

    A time range (`since_ms` inclusive, `until_ms` exclusive, by the record's
    requestTimestamp) is read without reading the topic from its start: the broker says where
    in each partition the first record at or after `since_ms` is (offsets for times; a Kafka
    timestamp is never earlier than the requestTimestamp it carries, so none in range lies
    before). Kafka's order is the order records arrived, not their requestTimestamp: records
    re-sent after a sidecar crash or held in the spool through a broker outage arrive late.
    The read goes on past `until_ms` up to the first record stamped `allowed_lateness_ms`
    after it (or the end the topic had when the read started) and keeps those in range.
    `topic_must_exist` raises `TopicNotFoundError` for a topic the cluster does not have
    (asked without creating it), where otherwise such a read yields nothing.

    `dedupe` drops the copies an at-least-once pipeline re-sends after a crash: a record with
    the same key, headers and value (byte for byte) as one of the `dedupe` records seen most
    recently is skipped (0: every record is yielded). A record under a key already seen but
    with other headers or another value (a shadow version's answer to the same request) is not
    a copy and is yielded. Each remembered record costs up to 250 bytes (25 MB for 100,000),
    never its payloads. One window serves all partitions: a re-sent record keeps its key, so it
    lands in the partition of its first copy, and this reader reads them all. The window holds
    only records the filters keep (a copy is kept or filtered out as its first copy was). Pass a
    `DuplicateWindow` instead of a number to read afterwards how many copies it `dropped`.

    `security` is how to connect to a secured Kafka (modelserving.kafka_security.settings; default
    PLAINTEXT); a broker that refuses it raises `KafkaRefused`, saying why.

    `progress`, when given, is kept up to date as the read goes.
    """
    if follow and until_ms is not None:
        raise ValueError("a read that follows the topic has no end: until_ms cannot be given")
    window = _duplicate_window(dedupe)
    wanted = _Filters(model, model_version, status_codes, where, contains, key, since_ms, until_ms)
    progress = progress if progress is not None else ReadProgress()
    async with inference_log_consumer(bootstrap_servers, security) as consumer:
        if topic_must_exist and topic not in await consumer.topics():
            raise TopicNotFoundError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        tps = await _assigned(consumer, topic, wait=follow)
        if not tps:
            return
        ends = await consumer.end_offsets(tps)
        if since_ms is not None:
            await _seek_to_time(consumer, tps, since_ms, ends)
        elif from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        if until_ms is not None:
            ends = await _stops_at_time(consumer, tps, until_ms + allowed_lateness_ms, ends)
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
                        record=decode_record(message.value, confluent=confluent),
                        key=message.key.decode("utf-8", errors="replace")
                        if message.key is not None
                        else None,
                        headers=_headers(message.headers or ()),
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        timestamp_ms=message.timestamp,
                    )
                    if not wanted(logged):
                        continue
                    if window is not None and window.seen(
                        message.key, message.headers or (), message.value
                    ):
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


def _duplicate_window(dedupe: int | DuplicateWindow) -> DuplicateWindow | None:
    """The window `read_inference_log` drops copies with: none for 0, one of that size for a
    number (at least 1), or the caller's own."""
    if isinstance(dedupe, DuplicateWindow):
        return dedupe
    return DuplicateWindow(dedupe) if dedupe else None


async def _assigned(consumer: Any, topic: str, wait: bool) -> list[Any]:
    """Subscribe to the topic and wait for its partitions (a missing topic has none)."""
    import asyncio

    consumer.subscribe([topic])
    deadline = asyncio.get_running_loop().time() + 3.0
    while not consumer.assignment():
        if not wait and asyncio.get_running_loop().time() > deadline:
            return []
        await asyncio.sleep(0.05)
    return sorted(consumer.assignment())


@dataclass(frozen=True, slots=True)
class _Filters:
    """Which records a read keeps (None: any)."""

    model: str | None
    model_version: int | None
    status_codes: Container[int] | None
    where: Mapping[str, str] | None
    contains: Mapping[str, str] | None
    key: str | None
    since_ms: int | None
    until_ms: int | None

    def __call__(self, logged: LoggedInference) -> bool:
        record = logged.record
        if self.model is not None and record.model_name != self.model:
            return False
        if self.model_version is not None and record.model_version != self.model_version:
            return False
        if self.status_codes is not None and record.response_http_code not in self.status_codes:
            return False
        if self.since_ms is not None and record.request_timestamp < self.since_ms:
            return False
        if self.until_ms is not None and record.request_timestamp >= self.until_ms:
            return False
        if self.key is not None and logged.key != self.key:
            return False
        headers = logged.headers
        if self.where and not all(headers.get(k) == v for k, v in self.where.items()):
            return False
        return not self.contains or all(
            k in headers and v in headers[k] for k, v in self.contains.items()
        )
