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
- MultiInference, which TF Serving's REST API does not have: the Classify/Regress request with
  the tasks in front, `{"tasks": [{"signature_name": ..., "method_name":
  "tensorflow/serving/classify"}, ...], "context": {...}, "examples": [...]}`; the answer
  `{"results": [{"signature_name": ..., "method_name": ..., "results": ...}, ...]}`, one per
  task in its order, each `results` as the task's own :classify or :regress answer writes it.

A tensor's values come from its typed field or, packed, from `tensor_content` by its dtype
(little-endian, as TF Serving's clients pack it), shaped by `tensor_shape`; a value given once
for a larger shape fills it, as TensorFlow does. float32 values are written in their shortest
form (0.1, not 0.10000000149011612), as TF Serving's REST API writes them; strings as text when
they are UTF-8, else as `{"b64": ...}`, TF Serving's form for binary strings.

A Predict's messages (the calls TF Serving's gRPC users make most) are written in one piece
where they can be: each tensor's values as Python holds them, nested by its shape, written by
repr, which writes ints and finite floats as json does, in C (json for bools and strings), and
checked to need no shorter float32 form (`_SEVEN_DIGITS`); the text is the same as the general
writer's, which writes the rest piece by piece (fills, large messages, a tensor one piece cannot
write or that must be refused), and `tests/unit/test_sidecar_grpc_json.py` holds the two equal
for every dtype and class of shape. The one piece costs a small Predict's record about a third
of what the general writer did (`python -m bench.parts.grpc_log_cost`).

A message that cannot be written (not the method's message, a tensor whose values do not match
its shape, a dtype JSON has no form for, more dimensions than TF Serving's 254) raises
`NotATensor` with the reason; the log's record maker decides what the record holds instead.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import struct
from array import array
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from google.protobuf.message import DecodeError

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import types_pb2
from modelserving.tfserving.example_pb2 import Example, Feature
from modelserving.tfserving.tensor_pb2 import TensorProto, TensorShapeProto


class NotATensor(ValueError):
    """A message or tensor the log cannot write as JSON; the message says why, never quoting
    the payload."""


# TensorFlow's TensorShape takes at most 254 dimensions, and so does TF Serving: a deeper shape
# is no model's input, and writing it would nest the JSON (and the writer's recursion) as deep.
MAX_TENSOR_RANK = 254


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32."""
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        shorter = float(f"{value:.{digits}g}")
        if struct.pack("<f", shorter) == packed:
            return shorter
    return value


def _float32s(values: Sequence[float]) -> list[float]:
    """`_float32` of each value, a batch at a time in C: every value written with 6
    significant digits and read back, then 7, 8 and 9 for those not yet the same float32 (each
    round is `_float32`'s for the values it reaches; a value no round gives back, NaN or an
    infinity, is kept, as there)."""
    given = list(values)
    read = _read_back(given, 6)
    if read == given:  # the same doubles, so the same float32s: values with few digits
        return read
    want = array("f", given)
    got = array("f", read)
    if got == want:
        return read
    out = given[:]
    todo: Sequence[int] = range(len(given))
    for digits in range(6, 10):
        if digits > 6:
            read = _read_back([given[i] for i in todo], digits)
            got = array("f", read)
        left = []
        for i, shorter, same in zip(todo, read, got, strict=True):
            if same == want[i]:  # NaN is never equal: kept
                out[i] = shorter
            else:
                left.append(i)
        if not left:
            break
        todo = left
    return out


def _read_back(values: list[float], digits: int) -> list[float]:
    """Each value written with `digits` significant digits (f"{value:.{digits}g}", all in one
    format call) and read back."""
    if not values:
        return []
    texts = (f"%.{digits}g\0" * len(values) % tuple(values)).split("\0")
    texts.pop()
    return list(map(float, texts))


def _half(bits: int) -> float:
    return float(struct.unpack("<e", struct.pack("<H", bits & 0xFFFF))[0])


def _bfloat16(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", (bits & 0xFFFF) << 16))[0])


def _text(value: bytes) -> Any:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def _texts(values: Sequence[bytes]) -> list[Any]:
    try:
        return [value.decode() for value in values]
    except UnicodeDecodeError:
        return [_text(value) for value in values]


# dtype -> (struct code of one packed value, the typed field, what makes the JSON values of a
# batch of them); Python's own values of a typed field or a packed one are the JSON values of
# the integer dtypes, double and bool as they are.
_Maker = Callable[[Sequence[Any]], list[Any]]
_DTYPES: dict[int, tuple[str, str, _Maker]] = {
    types_pb2.DT_FLOAT: ("f", "float_val", _float32s),
    types_pb2.DT_DOUBLE: ("d", "double_val", list),
    types_pb2.DT_INT32: ("i", "int_val", list),
    types_pb2.DT_UINT8: ("B", "int_val", list),
    types_pb2.DT_INT16: ("h", "int_val", list),
    types_pb2.DT_INT8: ("b", "int_val", list),
    types_pb2.DT_UINT16: ("H", "int_val", list),
    types_pb2.DT_INT64: ("q", "int64_val", list),
    types_pb2.DT_UINT32: ("I", "uint32_val", list),
    types_pb2.DT_UINT64: ("Q", "uint64_val", list),
    types_pb2.DT_BOOL: ("?", "bool_val", list),
    types_pb2.DT_HALF: ("H", "half_val", lambda values: [_half(v) for v in values]),
    types_pb2.DT_BFLOAT16: (
        "H",
        "half_val",
        lambda values: _float32s([_bfloat16(v) for v in values]),
    ),
    types_pb2.DT_STRING: ("", "string_val", _texts),
}
# The dtypes whose JSON values Python's repr writes as json does (ints, and floats that are
# finite: the same digits, the same ", " between items), so that a tensor of them is written
# in one C call; bool (True) and strings (quotes) are not.
_REPR_WRITES = frozenset(_DTYPES) - {types_pb2.DT_BOOL, types_pb2.DT_STRING}
# A float's repr with 7 significant digits or more (from its first digit not 0 to its last, the
# exponent aside, which never holds 7 digits). A float32 whose double's repr has 6 or fewer is
# written as that repr by `_float32` (its 6 digits read back are the same double), so that a
# tensor's repr holding no such number is its JSON text as it is: the common case, checked in C.
_SEVEN_DIGITS = re.compile(r"[1-9](?:\.?\d){5}[\d.]*[1-9]")

_BATCH = 1024  # values converted and written at a time


class _Tensor:
    """A tensor to write as TF Serving's REST JSON writes it, nested lists by its shape; checked
    at once, its values converted only as the writer reaches them."""

    __slots__ = ("code", "content", "count", "field", "make", "shape", "size", "width")

    def __init__(self, tensor: TensorProto) -> None:
        dtype = tensor.dtype
        if dtype not in _DTYPES:
            raise NotATensor(f"dtype {types_pb2.DataType.Name(dtype)} is not written as JSON")
        code, field, self.make = _DTYPES[dtype]
        dims = tensor.tensor_shape.dim
        if len(dims) > MAX_TENSOR_RANK:
            raise NotATensor(
                f"a tensor of {len(dims)} dimensions; TF Serving takes at most {MAX_TENSOR_RANK}"
            )
        self.shape = [d.size for d in dims]
        if any(size < 0 for size in self.shape):
            raise NotATensor(f"a tensor's shape must be known, got {self.shape}")
        self.size = size = math.prod(self.shape)
        self.content, self.code, self.width = b"", code, 0
        if tensor.tensor_content and code:
            self.content, self.width = tensor.tensor_content, struct.calcsize(code)
            if len(self.content) != size * self.width:
                raise NotATensor(
                    f"tensor_content holds {len(self.content)} bytes, not "
                    f"{size} values of {self.width}"
                )
            self.count = size
        else:
            self.field = getattr(tensor, field)
            self.count = len(self.field)
        if self.count < size and not self.count:
            raise NotATensor(f"a tensor of shape {self.shape} holds no values")
        if self.count > size:
            raise NotATensor(f"a tensor of shape {self.shape} holds {self.count} values")

    def values(self, start: int, end: int) -> list[Any]:
        """The JSON values of the flat positions start..end; a value given once for a larger
        shape fills it (TensorFlow fills with the last value)."""
        given = min(end, self.count)
        raw: Sequence[Any] = ()
        if given > start:
            if self.content:
                raw = struct.unpack_from(
                    f"<{given - start}{self.code}", self.content, start * self.width
                )
            else:
                raw = self.field[start:given]
        make = self.make
        out = make(raw)
        if end > given:  # only typed fields fill: packed content holds every value
            out += make([self.field[self.count - 1]]) * (end - max(given, start))
        return out

    def value(self) -> Any:
        return _nest(self.values(0, self.size), self.shape)

    def chunks(self) -> Iterator[str]:
        if not self.shape:
            yield _dumps(self.values(0, 1)[0])
        else:
            yield from self._block(0, self.shape)

    def _block(self, start: int, shape: list[int]) -> Iterator[str]:
        if len(shape) == 1:
            if not shape[0]:
                yield "[]"
                return
            for at in range(0, shape[0], _BATCH):
                batch = self.values(start + at, start + min(shape[0], at + _BATCH))
                yield ("[" if not at else ", ") + _dumps(batch)[1:-1]
            yield "]"
            return
        step = math.prod(shape[1:])
        yield "["
        for i in range(shape[0]):
            if i:
                yield ", "
            yield from self._block(start + i * step, shape[1:])
        yield "]"


def tensor_value(tensor: TensorProto) -> Any:
    """The tensor as TF Serving's REST JSON writes it: nested lists by its shape."""
    return _Tensor(tensor).value()


def _nest(values: list[Any], shape: Sequence[int]) -> Any:
    if not shape:
        return values[0]
    if 0 in shape:  # no values to split by size: an empty list per item of the outer sizes
        return values if len(shape) == 1 else [_nest([], shape[1:]) for _ in range(shape[0])]
    for size in reversed(shape[1:]):  # innermost first: each level a list of slices
        values = [values[i : i + size] for i in range(0, len(values), size)]
    return values


# A Predict's messages up to this size are written in one piece (`_in_one_piece`), the common
# case; larger ones piece by piece, no further than the log keeps.
_ONE_PIECE_UP_TO = 64 * 1024


@functools.lru_cache(maxsize=1024)
def _known_shape(serialized: bytes) -> tuple[tuple[int, ...], int] | None:
    """A tensor's shape and size, from its TensorShapeProto's bytes (a model's calls carry a
    few shapes, read once each); None when it is unknown or deeper than TF Serving's."""
    shape = tuple(d.size for d in TensorShapeProto.FromString(serialized).dim)
    if len(shape) > MAX_TENSOR_RANK or (shape and min(shape) < 0):
        return None
    return shape, math.prod(shape)


def _tensor_text(tensor: TensorProto) -> str | None:
    """The tensor's JSON text written in one piece, the same text as `_Tensor` writes piece by
    piece; None where only `_Tensor` writes it or says why not (a dtype JSON has no form for,
    a shape unknown or deeper than TF Serving's, values that fill a larger shape or that do not
    match it, a float JSON cannot write)."""
    dtype = tensor.dtype
    known = _DTYPES.get(dtype)
    shaped = _known_shape(tensor.tensor_shape.SerializeToString())
    if known is None or shaped is None:
        return None
    code, field, make = known
    shape, size = shaped
    content = tensor.tensor_content
    raw: Sequence[Any]
    if content and code:
        try:
            raw = struct.unpack(f"<{size}{code}", content)
        except struct.error:  # not `size` values
            return None
    else:
        raw = getattr(tensor, field)
        if len(raw) != size:
            return None
    float32 = dtype == types_pb2.DT_FLOAT
    value: Any = list(raw) if float32 else make(raw)
    if len(shape) != 1:
        value = _nest(value, shape)
    if dtype not in _REPR_WRITES:
        return _dumps(value)
    text = repr(value)
    if float32 and _SEVEN_DIGITS.search(text):
        # A value written with more digits than its float32 may need: all written as
        # `_float32s` writes them. Without one, each is already (see _SEVEN_DIGITS).
        value = make(raw)
        text = repr(value if len(shape) == 1 else _nest(value, shape))
    return None if "n" in text else text  # inf or nan, which JSON has no form for


def _named_texts(tensors: Any) -> str | None:
    """`{"name": tensor, ...}` of a map of tensors, by name, each in one piece; None when one
    cannot be."""
    pieces = []
    for name in sorted(tensors):
        text = _tensor_text(tensors[name])
        if text is None:
            return None
        pieces.append(f"{_key(name)}: {text}")
    return "{" + ", ".join(pieces) + "}"


def _predict_request_text(body: bytes) -> str | None:
    request = apis.PredictRequest.FromString(body)
    inputs = _named_texts(request.inputs)
    if inputs is None:
        return None
    signature = request.model_spec.signature_name
    if signature:
        return f'{{"signature_name": {_key(signature)}, "inputs": {inputs}}}'
    return f'{{"inputs": {inputs}}}'


def _predict_response_text(body: bytes) -> str | None:
    outputs = apis.PredictResponse.FromString(body).outputs
    if len(outputs) == 1:
        (tensor,) = outputs.values()
        text = _tensor_text(tensor)
    else:
        text = _named_texts(outputs)
    return None if text is None else f'{{"outputs": {text}}}'


class _Items:
    """A list to write whose items (examples, results) are converted as the writer reaches
    them."""

    __slots__ = ("convert", "items")

    def __init__(self, items: Sequence[Any], convert: Callable[[Any], Any]) -> None:
        self.items, self.convert = items, convert

    def chunks(self) -> Iterator[str]:
        if not self.items:
            yield "[]"
            return
        convert = self.convert
        for at in range(0, len(self.items), _BATCH):
            batch = [convert(item) for item in self.items[at : at + _BATCH]]
            yield ("[" if not at else ", ") + _dumps(batch)[1:-1]
        yield "]"


# json.dumps(value, allow_nan=False) would make an encoder per call.
_dumps = json.JSONEncoder(allow_nan=False).encode
_key = encode_basestring_ascii  # a key as json.dumps writes it


def _chunks(value: Any) -> Iterator[str]:
    """The JSON text of a document holding `_Tensor`s and `_Items`, piece by piece, as
    json.dumps writes the same values (its separators, ASCII only)."""
    if isinstance(value, _Tensor | _Items):
        yield from value.chunks()
    elif isinstance(value, dict):
        if not value:
            yield "{}"
            return
        for i, (key, item) in enumerate(value.items()):
            yield ("{" if not i else ", ") + _dumps(key) + ": "
            yield from _chunks(item)
        yield "}"
    elif isinstance(value, list):
        if not value:
            yield "[]"
            return
        for i, item in enumerate(value):
            yield "[" if not i else ", "
            yield from _chunks(item)
        yield "]"
    else:
        yield _dumps(value)


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
    inputs = {name: _Tensor(t) for name, t in sorted(request.inputs.items())}
    return {**_signature(request.model_spec), "inputs": inputs}


def _predict_response(body: bytes) -> dict[str, Any]:
    outputs = apis.PredictResponse.FromString(body).outputs
    if len(outputs) == 1:
        return {"outputs": _Tensor(next(iter(outputs.values())))}
    return {"outputs": {name: _Tensor(t) for name, t in sorted(outputs.items())}}


def _input(given: apis.Input) -> dict[str, Any]:
    kind = given.WhichOneof("kind")
    out: dict[str, Any] = {}
    if kind == "example_list_with_context":
        out["context"] = _example(given.example_list_with_context.context)
    examples = getattr(given, kind).examples if kind else []
    out["examples"] = _Items(examples, _example)
    return out


def _examples_request(body: bytes, message: type[Any]) -> dict[str, Any]:
    request = message.FromString(body)
    return {**_signature(request.model_spec), **_input(request.input)}


def _classes(each: apis.Classifications) -> list[Any]:
    return [[c.label, _float32(c.score)] for c in each.classes]


def _classifications(result: apis.ClassificationResult) -> _Items:
    return _Items(result.classifications, _classes)


def _regressions(result: apis.RegressionResult) -> _Items:
    return _Items(result.regressions, lambda r: _float32(r.value))


def _classify_response(body: bytes) -> dict[str, Any]:
    return {"results": _classifications(apis.ClassificationResponse.FromString(body).result)}


def _regress_response(body: bytes) -> dict[str, Any]:
    return {"results": _regressions(apis.RegressionResponse.FromString(body).result)}


CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _multi_request(body: bytes) -> dict[str, Any]:
    request = apis.MultiInferenceRequest.FromString(body)
    tasks = [{**_signature(t.model_spec), "method_name": t.method_name} for t in request.tasks]
    return {"tasks": tasks, **_input(request.input)}


def _multi_response(body: bytes) -> dict[str, Any]:
    results = []
    for result in apis.MultiInferenceResponse.FromString(body).results:
        entry: dict[str, Any] = _signature(result.model_spec)
        kind = result.WhichOneof("result")
        if kind == "classification_result":
            entry["method_name"] = CLASSIFY_METHOD
            entry["results"] = _classifications(result.classification_result)
        elif kind == "regression_result":
            entry["method_name"] = REGRESS_METHOD
            entry["results"] = _regressions(result.regression_result)
        results.append(entry)
    return {"results": results}


_CONVERTERS: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
    "Predict": (_predict_request, _predict_response),
    "Classify": (lambda b: _examples_request(b, apis.ClassificationRequest), _classify_response),
    "Regress": (lambda b: _examples_request(b, apis.RegressionRequest), _regress_response),
    "MultiInference": (_multi_request, _multi_response),
}


# The Predict's messages written in one piece where they can be (None: they cannot, the
# pieces write them or say why).
_IN_ONE_PIECE: dict[str, tuple[Callable[[bytes], str | None], Callable[[bytes], str | None]]] = {
    "Predict": (_predict_request_text, _predict_response_text),
}


def request_json(method: str, body: bytes, up_to: int = 0) -> bytes:
    """The REST JSON of a call's request; when `up_to` is set, only its first `up_to` bytes and
    a little more, or all of it for a Predict within 64 KiB (0: all of it). Raises
    `NotATensor` for what cannot be written as JSON."""
    whole = _IN_ONE_PIECE.get(method)
    return _converted(_CONVERTERS[method][0], body, up_to, whole and whole[0])


def response_json(method: str, body: bytes, ok: bool, up_to: int = 0) -> bytes:
    """The REST JSON of a call's answer, as `request_json`; an answer that is not OK is TF
    Serving's error body already, kept."""
    if not ok:
        return body
    whole = _IN_ONE_PIECE.get(method)
    return _converted(_CONVERTERS[method][1], body, up_to, whole and whole[1])


def rest_json(method: str, request: bytes, response: bytes, ok: bool) -> tuple[bytes, bytes]:
    """The REST JSON of a call's request and answer, whole."""
    return request_json(method, request), response_json(method, response, ok)


def _converted(
    convert: Callable[[bytes], Any],
    body: bytes,
    up_to: int,
    in_one_piece: Callable[[bytes], str | None] | None = None,
) -> bytes:
    """`up_to`: the log keeps only this many bytes of the JSON (maxPayloadBytes, cut): the text
    is written until it is longer, never further, so that a message of any size costs what
    one of that size does, and the log's cut of it is the cut of the whole text. A message
    within `_ONE_PIECE_UP_TO` is written whole in one piece where it can be (the log cuts the
    whole text as it would have cut the part), else piece by piece."""
    try:
        if in_one_piece is not None and len(body) <= _ONE_PIECE_UP_TO:
            text = in_one_piece(body)
            if text is not None:
                return text.encode()
        document = convert(body)
        if not up_to:
            return "".join(_chunks(document)).encode()
        written, size = [], 0
        for chunk in _chunks(document):
            written.append(chunk)
            size += len(chunk)  # ASCII: as many bytes as characters
            if size > up_to:
                break
        return "".join(written).encode()
    except NotATensor:
        raise
    except DecodeError as exc:  # protobuf's message names the field, never its bytes
        raise NotATensor(f"not the method's protobuf message: {exc}") from None
    except (ValueError, struct.error, OverflowError) as exc:
        # A float JSON cannot write (NaN in a typed field, say), content that does not unpack:
        # the messages of json and struct name the kind of value, not the payload's bytes.
        raise NotATensor(f"not written as JSON: {exc}") from None
