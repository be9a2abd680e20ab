"""The inference log's REST JSON of gRPC messages: tensors by dtype and shape, from their typed
fields or packed in tensor_content, float32 in its shortest form, strings as text or b64; the
forms TF Serving's REST API reads and writes."""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.example_pb2 import (
    BytesList,
    Example,
    Feature,
    Features,
    FloatList,
    Int64List,
)
from modelserving_sidecar.grpc import tensor_json
from modelserving_sidecar.grpc.tensor_json import NotATensor, request_json, rest_json, tensor_value


def tensor(dtype: int, shape: list[int], **values: object) -> tensor_pb2.TensorProto:
    dims = [tensor_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape=tensor_pb2.TensorShapeProto(dim=dims), **values
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "code", "values"),
    [
        (types_pb2.DT_FLOAT, "f", [0.1, -2.5, 3.0, 1e-7, 16777216.0, 0.3]),
        (types_pb2.DT_DOUBLE, "d", [0.1, -2.5, 3.0, 1e-300, 2.0**60, 0.3]),
        (types_pb2.DT_INT32, "i", [0, -1, 2**31 - 1, -(2**31), 7, 8]),
        (types_pb2.DT_INT64, "q", [0, -1, 2**63 - 1, -(2**63), 7, 8]),
        (types_pb2.DT_UINT8, "B", [0, 1, 255, 3, 4, 5]),
        (types_pb2.DT_BOOL, "?", [True, False, True, True, False, False]),
    ],
)
def test_packed_and_typed_tensors_are_the_same_nested_lists(
    dtype: int, code: str, values: list[object]
) -> None:
    field = {
        types_pb2.DT_FLOAT: "float_val",
        types_pb2.DT_DOUBLE: "double_val",
        types_pb2.DT_INT64: "int64_val",
        types_pb2.DT_BOOL: "bool_val",
    }.get(dtype, "int_val")
    nested = [values[0:3], values[3:6]]
    packed = tensor(dtype, [2, 3], tensor_content=struct.pack(f"<6{code}", *values))
    typed = tensor(dtype, [2, 3], **{field: values})
    assert tensor_value(packed) == tensor_value(typed) == nested
    assert json.dumps(tensor_value(packed)) == json.dumps(nested)


def test_scalars_strings_fills_and_halves() -> None:
    assert tensor_value(tensor(types_pb2.DT_FLOAT, [], float_val=[2.5])) == 2.5
    # One value for a larger shape fills it, as TensorFlow does.
    assert tensor_value(tensor(types_pb2.DT_INT32, [2, 2], int_val=[7])) == [[7, 7], [7, 7]]
    strings = tensor(types_pb2.DT_STRING, [2], string_val=[b"hello", b"\xff\x00"])
    assert tensor_value(strings) == ["hello", {"b64": "/wA="}]
    half = struct.unpack("<H", struct.pack("<e", 1.5))[0]
    assert tensor_value(tensor(types_pb2.DT_HALF, [1], half_val=[half])) == [1.5]


def test_a_predict_is_logged_as_the_rest_columnar_form() -> None:
    request = apis.PredictRequest(
        model_spec=apis.ModelSpec(name="m", signature_name="sig"),
        inputs={
            "x": tensor(types_pb2.DT_FLOAT, [2], tensor_content=struct.pack("<2f", 1, 0.1)),
            "k": tensor(types_pb2.DT_STRING, [1], string_val=[b"a"]),
        },
    )
    one = apis.PredictResponse(outputs={"y": tensor(types_pb2.DT_FLOAT, [2], float_val=[2.5, 3])})
    logged_request, logged_answer = rest_json(
        "Predict", request.SerializeToString(), one.SerializeToString(), ok=True
    )
    assert json.loads(logged_request) == {
        "signature_name": "sig",
        "inputs": {"k": ["a"], "x": [1.0, 0.1]},
    }
    assert logged_answer == b'{"outputs": [2.5, 3.0]}'
    two = apis.PredictResponse(
        outputs={
            "a": tensor(types_pb2.DT_INT64, [], int64_val=[1]),
            "b": tensor(types_pb2.DT_INT64, [], int64_val=[2]),
        }
    )
    _, answer = rest_json("Predict", b"", two.SerializeToString(), ok=True)
    assert json.loads(answer) == {"outputs": {"a": 1, "b": 2}}


def test_classify_and_regress_are_logged_as_the_rest_examples_form() -> None:
    example = Example(
        features=Features(
            feature={
                "x": Feature(float_list=FloatList(value=[1.5])),
                "ids": Feature(int64_list=Int64List(value=[1, 2])),
                "s": Feature(bytes_list=BytesList(value=[b"t"])),
            }
        )
    )
    context = Example(features=Features(feature={"c": Feature(float_list=FloatList(value=[1]))}))
    request = apis.RegressionRequest(
        model_spec=apis.ModelSpec(name="m"),
        input=apis.Input(
            example_list_with_context=apis.ExampleListWithContext(
                examples=[example], context=context
            )
        ),
    )
    answer = apis.RegressionResponse(
        result=apis.RegressionResult(regressions=[apis.Regression(value=0.1)])
    )
    logged_request, logged_answer = rest_json(
        "Regress", request.SerializeToString(), answer.SerializeToString(), ok=True
    )
    assert json.loads(logged_request) == {
        "context": {"c": 1.0},
        "examples": [{"ids": [1, 2], "s": "t", "x": 1.5}],
    }
    assert json.loads(logged_answer) == {"results": [0.1]}
    classified = apis.ClassificationResponse(
        result=apis.ClassificationResult(
            classifications=[apis.Classifications(classes=[apis.Class(label="cat", score=0.25)])]
        )
    )
    _, logged = rest_json("Classify", b"", classified.SerializeToString(), ok=True)
    assert json.loads(logged) == {"results": [[["cat", 0.25]]]}


def test_a_multi_inference_is_logged_as_its_tasks_and_the_examples_form() -> None:
    x = Example(features=Features(feature={"x": Feature(float_list=FloatList(value=[2.0]))}))
    request = apis.MultiInferenceRequest(
        tasks=[
            apis.InferenceTask(
                model_spec=apis.ModelSpec(name="m", signature_name="classify_x"),
                method_name="tensorflow/serving/classify",
            ),
            apis.InferenceTask(
                model_spec=apis.ModelSpec(name="m"), method_name="tensorflow/serving/regress"
            ),
        ],
        input=apis.Input(example_list=apis.ExampleList(examples=[x, x])),
    )
    classified = apis.ClassificationResult(
        classifications=[apis.Classifications(classes=[apis.Class(label="", score=0.1)])] * 2
    )
    answer = apis.MultiInferenceResponse(
        results=[
            apis.InferenceResult(
                model_spec=apis.ModelSpec(name="m", signature_name="classify_x"),
                classification_result=classified,
            ),
            apis.InferenceResult(
                model_spec=apis.ModelSpec(name="m", signature_name="serving_default"),
                regression_result=apis.RegressionResult(
                    regressions=[apis.Regression(value=3.0)] * 2
                ),
            ),
        ]
    )
    logged_request, logged_answer = rest_json(
        "MultiInference", request.SerializeToString(), answer.SerializeToString(), ok=True
    )
    assert json.loads(logged_request) == {
        "tasks": [
            {"signature_name": "classify_x", "method_name": "tensorflow/serving/classify"},
            {"method_name": "tensorflow/serving/regress"},
        ],
        "examples": [{"x": 2.0}, {"x": 2.0}],
    }
    # Each task's results as its own :classify or :regress answer writes them.
    _, classify_alone = rest_json(
        "Classify", b"", apis.ClassificationResponse(result=classified).SerializeToString(), True
    )
    assert json.loads(logged_answer) == {
        "results": [
            {
                "signature_name": "classify_x",
                "method_name": "tensorflow/serving/classify",
                **json.loads(classify_alone),
            },
            {
                "signature_name": "serving_default",
                "method_name": "tensorflow/serving/regress",
                "results": [3.0, 3.0],
            },
        ]
    }


def test_errors_are_kept_and_messages_that_cannot_be_written_say_why() -> None:
    error = b'{"error": "Servable not found for request: Latest(m)"}'
    assert rest_json("Predict", b"", error, ok=False)[1] == error
    with pytest.raises(NotATensor, match="not the method's protobuf message"):
        request_json("Predict", b"\x0a\x05")
    wrong = tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8)
    request = apis.PredictRequest(inputs={"x": wrong}).SerializeToString()
    with pytest.raises(NotATensor, match="tensor_content holds 8 bytes"):
        request_json("Predict", request)


def test_a_tensor_of_more_dimensions_than_tf_serving_takes_is_refused_not_recursed() -> None:
    deep = tensor(types_pb2.DT_FLOAT, [1] * 1200, float_val=[1.0])
    request = apis.PredictRequest(inputs={"x": deep}).SerializeToString()
    with pytest.raises(NotATensor, match="1200 dimensions; TF Serving takes at most 254"):
        request_json("Predict", request)
    deepest = tensor(types_pb2.DT_FLOAT, [1] * 254, float_val=[1.0])
    written = json.loads(
        request_json("Predict", apis.PredictRequest(inputs={"x": deepest}).SerializeToString())
    )
    value = written["inputs"]["x"]
    for _ in range(253):
        (value,) = value
    assert value == [1.0]


@given(
    shape=st.lists(st.integers(min_value=0, max_value=10), min_size=0, max_size=3),
    packed=st.booleans(),
    up_to=st.integers(min_value=1, max_value=3000),
    data=st.data(),
)
def test_a_message_is_written_as_jsons_text_of_it_and_only_as_far_as_the_log_keeps(
    shape: list[int], packed: bool, up_to: int, data: st.DataObject
) -> None:
    size = math.prod(shape)
    # Typed values may be fewer than the shape holds (the last fills it); packed ones may not.
    fewest = size if packed else min(1, size)
    floats = st.floats(width=32, allow_nan=False, allow_infinity=False)
    values = data.draw(st.lists(floats, min_size=fewest, max_size=size))
    content = {"tensor_content": struct.pack(f"<{size}f", *values)} if packed and size else {}
    x = tensor(types_pb2.DT_FLOAT, shape, **(content or {"float_val": values}))
    request = apis.PredictRequest(
        model_spec=apis.ModelSpec(signature_name="s"), inputs={"x": x, "y": x}
    ).SerializeToString()
    whole = request_json("Predict", request)
    # What json.dumps writes of the same values: the text of the REST call with this input.
    assert (
        whole
        == json.dumps(
            {"signature_name": "s", "inputs": {"x": tensor_value(x), "y": tensor_value(x)}}
        ).encode()
    )
    cut = request_json("Predict", request, up_to)
    assert whole.startswith(cut)
    assert cut == whole or len(cut) > up_to


def test_an_oversize_message_costs_what_the_log_keeps_of_it() -> None:
    big = tensor(types_pb2.DT_FLOAT, [2_000_000], tensor_content=b"\x00\x00\x80\x3f" * 2_000_000)
    request = apis.PredictRequest(inputs={"x": big}).SerializeToString()
    cut = request_json("Predict", request, 1000)
    assert cut.startswith(b'{"inputs": {"x": [1.0, 1.0, ')
    # One batch of values past the cut at most, of the 2 million.
    assert 1000 < len(cut) < 1000 + 1024 * len(b"1.0, ") + 100


# Every dtype the log writes: its typed field, its struct code when it can be packed, and values
# of it as hypothesis draws them (the raw values of the typed field: half and bfloat16 as bits).
_UINT16 = st.integers(min_value=0, max_value=0xFFFF)
_DTYPE_VALUES: dict[int, tuple[str, str, st.SearchStrategy[object]]] = {
    types_pb2.DT_FLOAT: (
        "float_val",
        "f",
        st.floats(width=32, allow_nan=False, allow_infinity=False),
    ),
    types_pb2.DT_DOUBLE: ("double_val", "d", st.floats(allow_nan=False, allow_infinity=False)),
    types_pb2.DT_INT32: ("int_val", "i", st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    types_pb2.DT_UINT8: ("int_val", "B", st.integers(min_value=0, max_value=255)),
    types_pb2.DT_INT16: ("int_val", "h", st.integers(min_value=-(2**15), max_value=2**15 - 1)),
    types_pb2.DT_INT8: ("int_val", "b", st.integers(min_value=-128, max_value=127)),
    types_pb2.DT_UINT16: ("int_val", "H", _UINT16),
    types_pb2.DT_INT64: ("int64_val", "q", st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    types_pb2.DT_UINT32: ("uint32_val", "I", st.integers(min_value=0, max_value=2**32 - 1)),
    types_pb2.DT_UINT64: ("uint64_val", "Q", st.integers(min_value=0, max_value=2**64 - 1)),
    types_pb2.DT_BOOL: ("bool_val", "?", st.booleans()),
    # Finite halves and bfloat16s only: an infinity is refused by both paths alike (below).
    types_pb2.DT_HALF: ("half_val", "", st.integers(min_value=0, max_value=0x7BFF)),
    types_pb2.DT_BFLOAT16: ("half_val", "", st.integers(min_value=0, max_value=0x7F7F)),
    types_pb2.DT_STRING: ("string_val", "", st.binary(max_size=6)),
}
# Each class of shape: a scalar, empty ones, one, two and three dimensions.
_SHAPES = ([], [0], [2, 0], [0, 3], [3], [2, 3], [2, 1, 2])


def _pieces(tensor: tensor_pb2.TensorProto) -> str:
    """The tensor written piece by piece: the general path, which writes any message."""
    return "".join(tensor_json._Tensor(tensor).chunks())


@pytest.mark.parametrize("dtype", list(_DTYPE_VALUES), ids=types_pb2.DataType.Name)
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
@given(packed=st.booleans(), data=st.data())
def test_a_tensor_in_one_piece_is_the_same_text_as_written_piece_by_piece(
    dtype: int, shape: list[int], packed: bool, data: st.DataObject
) -> None:
    field, code, values = _DTYPE_VALUES[dtype]
    size = math.prod(shape)
    drawn = data.draw(st.lists(values, min_size=size, max_size=size))
    if packed and code and size:
        x = tensor(dtype, shape, tensor_content=struct.pack(f"<{size}{code}", *drawn))
    else:
        x = tensor(dtype, shape, **{field: drawn})
    one_piece = tensor_json._tensor_text(x)
    assert one_piece is not None  # every dtype's tensor of values in full is the fast path's
    assert one_piece == _pieces(x)
    assert json.loads(one_piece) == json.loads(json.dumps(tensor_value(x)))


@given(values=st.lists(st.floats(width=32), min_size=1, max_size=40), rows=st.booleans())
# A float32 whose double's repr has 8 digits but that has a shorter form of its own (5.081677e7)
# beside one of 7, the most that are always written as they are; one of 9 digits; each beside
# one of many digits.
@example(values=[50816768.0, 1048577.0], rows=False)
@example(values=[-1915074.75], rows=True)
@example(values=[50816768.0, -1915074.75, 1048577.0, 0.1], rows=True)
def test_float32_in_one_piece_has_each_value_in_its_shortest_form_or_is_left_to_the_pieces(
    values: list[float], rows: bool
) -> None:
    shape = [len(values), 1] if rows else [len(values)]
    x = tensor(types_pb2.DT_FLOAT, shape, float_val=values)
    one_piece = tensor_json._tensor_text(x)
    if any(math.isnan(v) or math.isinf(v) for v in values):
        assert one_piece is None  # left to the pieces, which say JSON cannot hold it
        with pytest.raises(ValueError, match="Out of range float values"):
            _pieces(x)
    else:
        assert one_piece == _pieces(x)
    # The batch's values are each value's, NaN and the infinities kept.
    batch = tensor_json._float32s(x.float_val)
    assert list(map(repr, batch)) == [repr(tensor_json._float32(v)) for v in x.float_val]


def test_what_one_piece_leaves_to_the_pieces_they_write_or_refuse() -> None:
    # A value given once fills a larger shape; packed content that is not the shape's size; an
    # unknown shape; a dtype JSON has no form for.
    fill = tensor(types_pb2.DT_INT32, [2, 2], int_val=[7])
    short = tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8)
    unknown = tensor(types_pb2.DT_FLOAT, [-1], float_val=[1.0])
    resource = tensor(types_pb2.DT_RESOURCE, [1])
    for x in (fill, short, unknown, resource):
        assert tensor_json._tensor_text(x) is None
    assert _pieces(fill) == "[[7, 7], [7, 7]]"
    for x in (short, unknown, resource):
        request = apis.PredictRequest(inputs={"x": x}).SerializeToString()
        with pytest.raises(NotATensor):
            request_json("Predict", request)


@pytest.mark.parametrize("signature", ["", "serving_default"])
@pytest.mark.parametrize("outputs", [0, 1, 2])
def test_a_predict_in_one_piece_is_the_same_text_as_written_piece_by_piece(
    signature: str, outputs: int
) -> None:
    inputs = {
        "pixels": tensor(types_pb2.DT_FLOAT, [2, 2], float_val=[0.1, 0.5, 1e-7, 16777216.0]),
        "ids": tensor(types_pb2.DT_INT64, [2], tensor_content=struct.pack("<2q", 1, -2)),
        "words": tensor(types_pb2.DT_STRING, [], string_val=["é".encode()]),
    }
    request = apis.PredictRequest(
        model_spec=apis.ModelSpec(name="m", signature_name=signature), inputs=inputs
    ).SerializeToString()
    answers = {f"y{i}": inputs["pixels"] for i in range(outputs)}
    response = apis.PredictResponse(outputs=answers).SerializeToString()
    one_piece = rest_json("Predict", request, response, ok=True)
    in_pieces = (
        tensor_json._converted(tensor_json._predict_request, request, 0),
        tensor_json._converted(tensor_json._predict_response, response, 0),
    )
    assert one_piece == in_pieces
    assert tensor_json._predict_request_text(request) is not None  # the one piece's path taken
