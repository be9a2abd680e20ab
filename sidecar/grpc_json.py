"""TF Serving's REST JSON of a gRPC call's messages, for the inference log: a gRPC Predict is
logged as the REST :predict with the same tensors would be, so that one topic serves both
protocols and the records of the two compare equal. Run by the log's writer, never on the
request path.

- Predict: the request as the columnar form, `{"signature_name": ..., "inputs": {name: value}}`
  (signature_name only when the call named one); the answer as TF Serving's REST answers it,
  `{"outputs": value}` for one output, `{"outputs": {name: value}}` for several.
- Classify and Regress: `{"signature_name": ..., "context": {...}, "examples": [{...}]}`, a
  feature of one value written as that value; answers `{"results": [[[label, score], ...]]}` and
  `{"results": [value, ...]}`.

A tensor's values come from its typed field or, packed, from `tensor_content` by its dtype
(little-endian, as TF Serving's clients pack it), shaped by `tensor_shape`; a value given once
for a larger shape fills it, as TensorFlow does. float32 values are written in their shortest
form (0.1, not 0.10000000149011612), as TF Serving's REST API writes them; strings as text when
they are UTF-8, else as `{"b64": ...}`, TF Serving's form for binary strings.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import types_pb2
from modelserving.tfserving.example_pb2 import Example, Feature
from modelserving.tfserving.tensor_pb2 import TensorProto


class NotATensor(ValueError):
    """A message or tensor the log cannot write as JSON."""


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32."""
    shorter = float(f"{value:.6g}")
    if shorter == value:  # six digits or fewer (1.0, 2.5, inf): the value as it is, no packing
        return value
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    if struct.pack("<f", shorter) == packed:
        return shorter
    for digits in range(7, 10):
        shorter = float(f"{value:.{digits}g}")
        if struct.pack("<f", shorter) == packed:
            return shorter
    return value


def _half(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0])


def _bfloat16(bits: int) -> float:
    return _float32(struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0])


def _text(value: bytes) -> Any:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


# dtype -> (struct code of one packed value, the typed field, what makes a JSON value of one;
# None where the values read are their JSON values already: ints, bools, doubles)
_Maker = Callable[[Any], Any]
_DTYPES: dict[int, tuple[str, str, _Maker | None]] = {
    types_pb2.DT_FLOAT: ("f", "float_val", _float32),
    types_pb2.DT_DOUBLE: ("d", "double_val", None),
    types_pb2.DT_INT32: ("i", "int_val", None),
    types_pb2.DT_UINT8: ("B", "int_val", None),
    types_pb2.DT_INT16: ("h", "int_val", None),
    types_pb2.DT_INT8: ("b", "int_val", None),
    types_pb2.DT_UINT16: ("H", "int_val", None),
    types_pb2.DT_INT64: ("q", "int64_val", None),
    types_pb2.DT_UINT32: ("I", "uint32_val", None),
    types_pb2.DT_UINT64: ("Q", "uint64_val", None),
    types_pb2.DT_BOOL: ("?", "bool_val", None),
    types_pb2.DT_HALF: ("H", "half_val", _half),
    types_pb2.DT_BFLOAT16: ("H", "half_val", _bfloat16),
    types_pb2.DT_STRING: ("", "string_val", _text),
}
_WIDTHS = {code: struct.calcsize(code) for code, _, _ in _DTYPES.values() if code}


def tensor_value(tensor: TensorProto) -> Any:
    """The tensor as TF Serving's REST JSON writes it: nested lists by its shape."""
    dtype = tensor.dtype
    kind = _DTYPES.get(dtype)
    if kind is None:
        raise NotATensor(f"dtype {types_pb2.DataType.Name(dtype)} is not written as JSON")
    code, field, make = kind
    shape = [d.size for d in tensor.tensor_shape.dim]
    size = math.prod(shape)
    if shape and min(shape) < 0:
        raise NotATensor(f"a tensor's shape must be known, got {shape}")
    raw: Iterable[Any]
    content = tensor.tensor_content
    if content and code:
        width = _WIDTHS[code]
        if len(content) != size * width:
            raise NotATensor(f"tensor_content holds {len(content)} bytes, not "
                             f"{size} values of {width}")  # fmt: skip
        raw = struct.unpack(f"<{size}{code}", content)  # every value in one call
    else:
        raw = getattr(tensor, field)
    values = list(raw) if make is None else list(map(make, raw))
    if len(values) < size:
        if not values:
            raise NotATensor(f"a tensor of shape {shape} holds no values")
        values += [values[-1]] * (size - len(values))  # TensorFlow fills with the last value
    elif len(values) > size:
        raise NotATensor(f"a tensor of shape {shape} holds {len(values)} values")
    return _nest(values, shape)


def _nest(values: list[Any], shape: list[int]) -> Any:
    """The flat values as nested lists of `shape`: grouped by the innermost dimension first,
    one list comprehension per dimension."""
    if not shape:
        return values[0]
    for depth in range(len(shape) - 1, 0, -1):
        size, groups = shape[depth], math.prod(shape[:depth])
        values = [values[i * size : (i + 1) * size] for i in range(groups)]
    return values


def _feature(feature: Feature) -> Any:
    kind = feature.WhichOneof("kind")
    if kind is None:
        return []
    if kind == "float_list":
        values = [_float32(v) for v in feature.float_list.value]
    elif kind == "int64_list":
        values = list(feature.int64_list.value)
    else:
        values = [_text(v) for v in feature.bytes_list.value]
    return values[0] if len(values) == 1 else values


def _example(example: Example) -> dict[str, Any]:
    return {name: _feature(f) for name, f in sorted(example.features.feature.items())}


def _signature(spec: apis.ModelSpec) -> dict[str, str]:
    return {"signature_name": spec.signature_name} if spec.signature_name else {}


def _predict_request(body: bytes) -> dict[str, Any]:
    request = apis.PredictRequest.FromString(body)
    inputs = request.inputs
    values = {name: tensor_value(inputs[name]) for name in sorted(inputs)}
    if request.model_spec.signature_name:
        return {"signature_name": request.model_spec.signature_name, "inputs": values}
    return {"inputs": values}


def _predict_response(body: bytes) -> dict[str, Any]:
    outputs = apis.PredictResponse.FromString(body).outputs
    if len(outputs) == 1:
        for tensor in outputs.values():
            return {"outputs": tensor_value(tensor)}
    return {"outputs": {name: tensor_value(outputs[name]) for name in sorted(outputs)}}


def _examples_request(body: bytes, message: type[Any]) -> dict[str, Any]:
    request = message.FromString(body)
    kind = request.input.WhichOneof("kind")
    out: dict[str, Any] = _signature(request.model_spec)
    if kind == "example_list_with_context":
        out["context"] = _example(request.input.example_list_with_context.context)
    examples = getattr(request.input, kind).examples if kind else []
    out["examples"] = [_example(e) for e in examples]
    return out


def _classify_response(body: bytes) -> dict[str, Any]:
    result = apis.ClassificationResponse.FromString(body).result
    return {"results": [[[c.label, _float32(c.score)] for c in each.classes]
                        for each in result.classifications]}  # fmt: skip


def _regress_response(body: bytes) -> dict[str, Any]:
    result = apis.RegressionResponse.FromString(body).result
    return {"results": [_float32(r.value) for r in result.regressions]}


_CONVERTERS: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
    "Predict": (_predict_request, _predict_response),
    "Classify": (lambda b: _examples_request(b, apis.ClassificationRequest), _classify_response),
    "Regress": (lambda b: _examples_request(b, apis.RegressionRequest), _regress_response),
}


# json.dumps(value, allow_nan=False) would make an encoder per call.
_ENCODE = json.JSONEncoder(allow_nan=False).encode


def _json(value: Any) -> bytes:
    return _ENCODE(value).encode()


def rest_json(
    method: str, request: bytes, response: bytes, ok: bool, max_bytes: int = 0
) -> tuple[bytes, bytes]:
    """The REST JSON of a call's request and answer (an answer that is not OK is TF Serving's
    error body already, kept). What cannot be written as JSON is written as TF Serving's error
    body saying why, with the message's bytes in base64 (`{"error": ..., "b64": ...}`).

    A message over `max_bytes` (logging.maxPayloadBytes; 0: no limit) is not decoded: its JSON
    would be larger still and cut by the log anyway, and decoding megabytes of tensors would
    hold the event loop for seconds. Its record says so, with the message's size."""
    to_request, to_response = _CONVERTERS[method]
    return (
        _converted(to_request, request, max_bytes),
        _converted(to_response, response, max_bytes) if ok else response,
    )


def _converted(convert: Callable[[bytes], Any], body: bytes, max_bytes: int) -> bytes:
    if max_bytes and len(body) > max_bytes:
        why = f"a gRPC message of {len(body)} bytes, over the log's maxPayloadBytes of {max_bytes}"
        return _json({"error": f"{why}, is not written as JSON"})
    try:
        return _json(convert(body))
    except (DecodeError, NotATensor, ValueError, struct.error) as exc:
        return _json({"error": f"not written as JSON: {exc}",
                      "b64": base64.b64encode(body).decode()})  # fmt: skip
