"""The inference log's record: the seed's `inferencelog` Avro schema, its encoding, and the
reader API data teams use to get decoded records (with Kafka key and headers) back from a topic.

On the topic each value is plain Avro binary of `SCHEMA` with no schema-registry prefix, as
Hopsworks wrote it; Confluent framing (magic byte and 4-byte schema id) is an option of the
writer and the reader. Each Kafka record also carries a key (the request id) and the headers
named `HEADER_*` below; the Avro value stays the seed's seven fields.

Reading, in Python::

    async for logged in read_inference_log("mnist-inference", "kafka:9092",
                                           from_beginning=True, model="mnist"):
        print(logged.key, logged.headers, logged.record.response_http_code)

Delivery is at least once: after a sidecar crash, the records Kafka had not acknowledged are on
the topic twice. `dedupe=` drops such copies (see `inferencelog_dedupe`).
"""

from __future__ import annotations

import io
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro

from modelserving.inferencelog_dedupe import DuplicateWindow
from modelserving.kafka_security import KafkaRefused, KafkaSecurity, diagnose, problem_of

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
# `request=redacted,response=digest` (marks: redacted, cut, digest, dropped).
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


def _headers(raw: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {name: value.decode("utf-8", errors="replace") for name, value in raw}


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
) -> AsyncIterator[LoggedInference]:
    """Decoded records of a topic, in order within each partition.

    Reads from the end (only what arrives from now on) unless `from_beginning`; without
    `follow` it stops once it has read up to the end the topic had when it started. `model`
    keeps only one model's records; `key` only the record(s) of one request id; `where` keeps
    records whose headers have the given values (for example `{HEADER_CALLER: "team-a"}`),
    `contains` those whose headers hold the given text (`{HEADER_PAYLOAD: "cut"}`; an empty
    text asks only that the header be there). Values that do not decode raise
    `InferenceLogDecodeError`. No consumer group is used: nothing is committed.

    `dedupe` drops the copies an at-least-once pipeline re-sends after a crash: a record with
    the same key, headers and value (byte for byte) as one of the `dedupe` records seen most
    recently is skipped (0: every record is yielded). A record under a key already seen but
    with other headers or another value (a shadow version's answer to the same request) is not
    a copy and is yielded. Each remembered record costs up to 250 bytes (25 MB for 100,000),
    never its payloads. One window serves all partitions: a re-sent record keeps its key, so it
    lands in the partition of its first copy, and this reader reads them all. The window holds
    only records the filters keep (a copy is kept or filtered out as its first copy was). Pass a
    `DuplicateWindow` instead of a number to read afterwards how many copies it `dropped`.

    `security` is how to connect to a secured Kafka (modelserving.kafka_security; default
    PLAINTEXT); a broker that refuses it raises `KafkaRefused`, saying why.
    """
    from aiokafka import AIOKafkaConsumer

    window = _duplicate_window(dedupe)
    security = security or KafkaSecurity()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **security.client_options(),
    )
    try:
        await consumer.start()
    except Exception as exc:
        await consumer.stop()
        problem = problem_of(exc) or await diagnose(bootstrap_servers, security)
        if problem is None:
            raise
        raise KafkaRefused(problem) from None
    try:
        tps = await _assigned(consumer, topic, wait=follow)
        if not tps:
            return
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while follow or remaining:
            batches = await consumer.getmany(*tps, timeout_ms=500, max_records=500)
            for tp, messages in batches.items():
                for message in messages:
                    if not follow and message.offset >= ends[tp]:
                        remaining.discard(tp)
                        break
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
                    if not _wanted(logged, model, where, contains, key):
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
    finally:
        await consumer.stop()


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


def _wanted(
    logged: LoggedInference,
    model: str | None,
    where: Mapping[str, str] | None,
    contains: Mapping[str, str] | None = None,
    key: str | None = None,
) -> bool:
    if model is not None and logged.record.model_name != model:
        return False
    if key is not None and logged.key != key:
        return False
    headers = logged.headers
    if where and not all(headers.get(k) == v for k, v in where.items()):
        return False
    return not contains or all(k in headers and v in headers[k] for k, v in contains.items())
