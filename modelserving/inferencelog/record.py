"""The inference log's record: the seed's `inferencelog` Avro schema, the Kafka headers each record
carries beside it, and the record's encoding and decoding (`encode_record`, the sidecar's
`InferenceLogEncoder`, `decode_record`).

On the topic each value is plain Avro binary of `SCHEMA` with no schema-registry prefix, as
Hopsworks wrote it, or, with a schema registry, in Confluent's wire format (magic byte 0, the
4-byte big-endian schema id, then the Avro body). A reader tells the two apart by the first byte
(`framed_schema_id`) and reads a body written with a later schema into the seed's fields by
Avro's schema resolution (`decode_body`). Each Kafka record also carries a key (the request id)
and the headers named `HEADER_*` below; the Avro value stays the seed's seven fields.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

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
# The caller's W3C tracestate, passed on with its traceparent: present only when the caller sent
# one (valid, with a valid traceparent, at most 512 characters).
HEADER_TRACESTATE = "tracestate"
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
# Where the Avro body of a framed value starts.
CONFLUENT_PREFIX_SIZE = _CONFLUENT_PREFIX.size


def confluent_prefix(schema_id: int) -> bytes:
    """Confluent's wire-format header of a value: the magic byte 0, then the schema id in four
    bytes, big-endian (what precedes the Avro body of a framed record)."""
    return _CONFLUENT_PREFIX.pack(_CONFLUENT_MAGIC, schema_id)


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


def framed_schema_id(value: bytes) -> int | None:
    """The schema id of a value in Confluent's wire format, None for plain Avro.

    The first byte tells: a plain record starts with its modelId as Avro writes an int (zigzag,
    then varint), which is 0 only for modelId 0, and model ids start at 1; a framed value starts
    with the magic byte 0. A value too short to hold the id raises InferenceLogDecodeError."""
    if not value or value[0] != _CONFLUENT_MAGIC:
        return None
    if len(value) < _CONFLUENT_PREFIX.size:
        raise InferenceLogDecodeError("value is too short for Confluent's schema-registry prefix")
    return int(_CONFLUENT_PREFIX.unpack_from(value)[1])


def decode_body(
    value: bytes, offset: int = 0, writer_schema: Any = PARSED_SCHEMA
) -> InferenceLogRecord:
    """The record in the Avro body that starts at `offset` of a value (5 after Confluent's
    prefix), written with `writer_schema` (parsed; the seed's by default) and read into the
    seed's seven fields by Avro's schema resolution: a field a later schema added is skipped."""
    buf = io.BytesIO(value)
    buf.seek(offset)
    reader_schema = None if writer_schema is PARSED_SCHEMA else PARSED_SCHEMA
    try:
        data = fastavro.schemaless_reader(buf, writer_schema, reader_schema)
    except fastavro.read.SchemaResolutionError as exc:
        raise InferenceLogDecodeError(
            f"value's schema cannot be read as the inferencelog schema: {exc}"
        ) from None
    except (EOFError, ValueError, UnicodeDecodeError, IndexError) as exc:
        raise InferenceLogDecodeError(f"value is not an inferencelog record: {exc}") from None
    if buf.tell() != len(value):
        raise InferenceLogDecodeError("value has bytes after the inferencelog record")
    if not isinstance(data, dict):
        raise InferenceLogDecodeError("value is not an inferencelog record")
    return InferenceLogRecord.from_avro(data)


def decode_record(value: bytes, confluent: bool = False) -> InferenceLogRecord:
    """The record in one Kafka value written with the seed's schema: plain Avro, or
    Confluent-framed when `confluent` (the prefix is then required)."""
    if not confluent:
        return decode_body(value)
    if framed_schema_id(value) is None:
        raise InferenceLogDecodeError("value has no Confluent schema-registry prefix")
    return decode_body(value, _CONFLUENT_PREFIX.size)
