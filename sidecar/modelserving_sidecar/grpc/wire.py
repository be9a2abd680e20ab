"""The little the sidecar reads of a gRPC request on the hot path: the model spec (field 1 of
every request TF Serving's PredictionService and ModelService take, but MultiInference's, whose
field 1 is its tasks, each with a model spec), found by walking the protobuf wire format up to
it, so that the tensors after it are never decoded; and the request with a model spec of the
sidecar's choosing (the version the split or a label chose) in its place. Also the one string of
a gRPC health check. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import DecodeError

from modelserving.tfserving.serving_apis_pb2 import InferenceTask, ModelSpec

_MODEL_SPEC_TAG = 1 << 3 | 2  # field 1, length-delimited
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The request is not a protobuf message (the caller gets INVALID_ARGUMENT)."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise WireError("a truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def model_spec_span(data: bytes) -> tuple[int, int, int]:
    """(start of the field's tag, start of the spec's bytes, end) of the model spec; (0, 0, 0)
    when there is none. Only the top level is walked, each other field skipped by its length
    unread (a request's few tensors are a few fields). A second model spec, which protobuf would
    merge into the first and so change the model or version after the sidecar decided, is
    refused."""
    at = 0
    size = len(data)
    found = (0, 0, 0)
    while at < size:
        start = at
        tag, at = _varint(data, at)
        kind = tag & 7
        if tag == _MODEL_SPEC_TAG:
            length, at = _varint(data, at)
            if at + length > size:
                raise WireError("the model spec runs past the end of the request")
            if found[2]:
                raise WireError("the request holds model_spec twice")
            found = (start, at, at + length)
            at += length
        elif kind == _VARINT:
            _, at = _varint(data, at)
        elif kind == _I64:
            at += 8
        elif kind == _LEN:
            length, at = _varint(data, at)
            at += length
        elif kind == _I32:
            at += 4
        else:
            raise WireError(f"wire type {kind} is not one proto3 messages use")
    if at != size:
        raise WireError("a field runs past the end of the request")
    return found


def read_model_spec(data: bytes) -> tuple[ModelSpec, tuple[int, int]]:
    """The request's model spec (an empty one when it has none) and the span of its field."""
    start, spec_at, end = model_spec_span(data)
    spec = ModelSpec()
    if end:
        try:
            spec.ParseFromString(data[spec_at:end])
        except DecodeError as exc:
            raise WireError(f"the model spec is not a ModelSpec: {exc}") from None
    return spec, (start, end)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def with_model_spec(data: bytes, span: tuple[int, int], spec: ModelSpec) -> bytes:
    """The request with `spec` in place of the field at `span` (or first, when there was none):
    one copy of the request's bytes, none of them decoded."""
    encoded = spec.SerializeToString()
    field = bytes([_MODEL_SPEC_TAG]) + _encode_varint(len(encoded)) + encoded
    start, end = span
    if not end:
        return field + data
    return b"".join((data[:start], field, data[end:]))


def top_level_fields(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of its tag, start of its value, end) of each top-level field, in
    the order written; a length-delimited value starts after its length. Values are skipped
    unread."""
    at = 0
    size = len(data)
    while at < size:
        start = at
        tag, at = _varint(data, at)
        kind = tag & 7
        value_at = at
        if kind == _VARINT:
            _, at = _varint(data, at)
        elif kind == _I64:
            at += 8
        elif kind == _LEN:
            length, value_at = _varint(data, at)
            at = value_at + length
        elif kind == _I32:
            at += 4
        else:
            raise WireError(f"wire type {kind} is not one proto3 messages use")
        if at > size:
            raise WireError("a field runs past the end of the message")
        yield tag >> 3, start, value_at, at


def read_tasks(data: bytes) -> tuple[list[InferenceTask], list[tuple[int, int]]]:
    """A MultiInferenceRequest's tasks (field 1: each a model spec and a method name, a few
    bytes) and the span of each task's field; the input (field 2) is skipped unread."""
    tasks, spans = [], []
    for number, start, value_at, end in top_level_fields(data):
        if number != 1:
            continue
        if data[start] != _MODEL_SPEC_TAG:
            raise WireError("the request's tasks are not a repeated message")
        task = InferenceTask()
        try:
            task.ParseFromString(data[value_at:end])
        except DecodeError as exc:
            raise WireError(f"a task is not an InferenceTask: {exc}") from None
        tasks.append(task)
        spans.append((start, end))
    return tasks, spans


def with_tasks(data: bytes, spans: list[tuple[int, int]], tasks: list[InferenceTask]) -> bytes:
    """The request with `tasks` in place of the tasks at `spans`: the tasks first, then every
    other field as it came (one copy of the request's bytes, the input not decoded)."""
    parts: list[bytes] = []
    for task in tasks:
        encoded = task.SerializeToString()
        parts += (bytes([_MODEL_SPEC_TAG]), _encode_varint(len(encoded)), encoded)
    at = 0
    for start, end in spans:
        parts.append(data[at:start])
        at = end
    parts.append(data[at:])
    return b"".join(parts)


def string_field(data: bytes, number: int) -> str:
    """The UTF-8 string in field `number` of a message ("" when it has none; the last one when
    written twice, as protobuf reads it)."""
    found = ""
    for field, start, value_at, end in top_level_fields(data):
        if field == number:
            if data[start] & 7 != _LEN:
                raise WireError(f"field {number} is not a string")
            try:
                found = data[value_at:end].decode()
            except UnicodeDecodeError:
                raise WireError(f"field {number} is not UTF-8") from None
    return found
