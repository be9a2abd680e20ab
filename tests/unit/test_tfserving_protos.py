"""TF Serving's API as our .proto files define it: the committed modules are what grpcio-tools
makes of the .proto files today, and the messages put TF Serving's field numbers on the wire
(bytes written by hand from TF Serving's .proto files, so a renumbered field cannot pass)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import wrappers_pb2

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from tools.generate_protos import PROTO_DIR, ROOT, generate


def test_the_committed_modules_are_what_the_proto_files_generate(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh = {p.relative_to(tmp_path) for p in (tmp_path / PROTO_DIR).glob("*_pb2*")}
    committed = {p.relative_to(ROOT) for p in (ROOT / PROTO_DIR).glob("*_pb2*")}
    assert fresh == committed, "run `make protos` and commit what it writes"
    for name in sorted(fresh):
        assert (tmp_path / name).read_bytes() == (ROOT / name).read_bytes(), (
            f"{name} is not what `make protos` generates: run it and commit the result"
        )


def test_a_predict_request_has_tf_servings_field_numbers() -> None:
    request = apis.PredictRequest(
        model_spec=apis.ModelSpec(name="m", version=wrappers_pb2.Int64Value(value=3)),
        inputs={"x": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])},
    )
    # model_spec = 1 {name = 1 "m", version = 2 {value = 1: 3}}
    spec = b"\x0a\x01m" + b"\x12\x02\x08\x03"
    # inputs = 2, a map entry {key = 1 "x", value = 2 TensorProto {dtype = 1: 1, float_val = 5}}
    tensor = b"\x08\x01" + b"\x2a\x04" + b"\x00\x00\x80\x3f"
    entry = b"\x0a\x01x" + b"\x12" + bytes([len(tensor)]) + tensor
    assert request.SerializeToString() == b"\x0a\x07" + spec + b"\x12" + bytes([len(entry)]) + entry


def test_model_status_and_labels_have_tf_servings_numbers() -> None:
    spec = apis.ModelSpec(name="m", version_label="canary", signature_name="s")
    assert spec.SerializeToString() == b"\x0a\x01m" + b"\x1a\x01s" + b"\x22\x06canary"
    status = apis.ModelVersionStatus(
        version=2,
        state=apis.ModelVersionStatus.AVAILABLE,
        status=apis.StatusProto(error_code=5, error_message="x"),
    )
    assert status.SerializeToString() == b"\x08\x02\x10\x1e\x1a\x05\x08\x05\x12\x01x"
    assert apis.DESCRIPTOR.services_by_name["PredictionService"].full_name == (
        "tensorflow.serving.PredictionService"
    )
