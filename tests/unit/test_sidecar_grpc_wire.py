"""What the sidecar reads of a gRPC request on its hot path: the model spec found by a walk of
the wire format's top level, the tensors skipped unread; the request with the chosen version in
its place, every other byte as it came; a MultiInference's tasks, all naming the version chosen
or refused when they disagree."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.example_pb2 import Example, Feature, Features, FloatList
from modelserving_sidecar.calls import Call
from modelserving_sidecar.config import ConfigError, parse_config
from modelserving_sidecar.grpc.gateway import (
    HTTP_STATUS,
    METHODS,
    REFUSALS,
    GrpcGateway,
    _Refused,
)
from modelserving_sidecar.grpc.tensor_json import CLASSIFY_METHOD as CLASSIFY
from modelserving_sidecar.grpc.tensor_json import REGRESS_METHOD as REGRESS
from modelserving_sidecar.grpc.wire import (
    WireError,
    read_model_spec,
    read_tasks,
    with_model_spec,
    with_tasks,
)
from modelserving_sidecar.model.state import AVAILABLE, ModelState, ModelStatus, VersionStatus
from modelserving_sidecar.routing.router import Router
from modelserving_sidecar.routing.shadow import ShadowSender
from modelserving_sidecar.routing.split import Routing, ShadowVersion, VersionRoute, WeightedVersion


def predict(values: list[float], **spec: object) -> apis.PredictRequest:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    return apis.PredictRequest(
        model_spec=apis.ModelSpec(**spec), inputs={"x": tensor}, output_filter=["y"]
    )


@given(
    values=st.lists(st.floats(width=32, allow_nan=False), max_size=50),
    label=st.sampled_from(["", "canary"]),
    signature=st.sampled_from(["", "serving_default"]),
    version=st.integers(min_value=0, max_value=2**40),
)
def test_the_chosen_version_replaces_the_spec_and_nothing_else_changes(
    values: list[float], label: str, signature: str, version: int
) -> None:
    spec: dict[str, object] = {"name": "m", "signature_name": signature}
    if label:
        spec["version_label"] = label
    request = predict(values, **spec)
    data = request.SerializeToString()
    read, span = read_model_spec(data)
    assert read == request.model_spec
    read.version.value = version
    forwarded = apis.PredictRequest.FromString(with_model_spec(data, span, read))
    expected = apis.PredictRequest()
    expected.CopyFrom(request)
    expected.model_spec.version.value = version  # and no label: one of the two
    assert forwarded == expected
    assert forwarded.model_spec.WhichOneof("version_choice") == "version"


def test_a_spec_after_the_tensors_is_found_and_a_request_without_one_gets_one() -> None:
    request = predict([1.0], name="m", version=wrappers_pb2.Int64Value(value=3))
    tensors = apis.PredictRequest(inputs=request.inputs).SerializeToString()
    spec = apis.PredictRequest(model_spec=request.model_spec).SerializeToString()
    read, _ = read_model_spec(tensors + spec)  # fields out of number order are valid protobuf
    assert read == request.model_spec
    empty, span = read_model_spec(tensors)
    assert empty == apis.ModelSpec()
    named = apis.ModelSpec(name="m", version=wrappers_pb2.Int64Value(value=1))
    assert apis.PredictRequest.FromString(with_model_spec(tensors, span, named)).model_spec == named


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x0a\x05\x0a\x01m", "past the end"),  # a spec of 5 bytes with 3 there
        (b"\x12\x80", "varint"),  # a length cut short
        (b"\x0b", "wire type 3"),  # a group start: not proto3
        (
            b"\x0a\x03\x0a\x01m\x0a\x03\x0a\x01n",
            "twice",
        ),  # a second spec would merge into the first
    ],
)
def test_what_is_not_a_request_is_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(WireError, match=why):
        read_model_spec(data)


def test_every_grpc_status_has_an_http_code_and_the_refusals_mean_what_401_and_403_mean() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert REFUSALS[401] is grpc.StatusCode.UNAUTHENTICATED
    assert REFUSALS[403] is grpc.StatusCode.PERMISSION_DENIED
    assert HTTP_STATUS[grpc.StatusCode.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[grpc.StatusCode.PERMISSION_DENIED] == 403
    assert HTTP_STATUS[grpc.StatusCode.NOT_FOUND] == 404
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400


def test_the_methods_served_are_tf_servings_by_their_full_names() -> None:
    services = {s.full_name: s for s in apis.DESCRIPTOR.services_by_name.values()}
    for method in METHODS:
        assert method.name in services[method.service].methods_by_name
    assert [m.path for m in METHODS if m.logged] == [
        "/tensorflow.serving.PredictionService/Predict",
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/Regress",
        "/tensorflow.serving.PredictionService/MultiInference",
    ]


def test_the_grpc_port_and_its_message_limit_are_settings_with_defaults_for_a_pod() -> None:
    base = {
        "serving": {"name": "s", "namespace": "n"},
        "model": {"name": "m", "version": 1, "modelId": 1},
    }
    default = parse_config(base).grpc
    assert (default.port, default.upstream) == (8500, "127.0.0.1:8510")
    assert default.max_message_bytes == 64 * 1024 * 1024  # well above gRPC's 4 MiB
    off = parse_config({**base, "grpc": {"port": 0, "maxMessageBytes": 1024}}).grpc
    assert (off.port, off.max_message_bytes) == (0, 1024)
    with pytest.raises(ConfigError, match=r"grpc.maxMessageBytes: expected an integer of 1"):
        parse_config({**base, "grpc": {"maxMessageBytes": 0}})
    with pytest.raises(ConfigError, match=r"grpc: unknown key\(s\) maxRequestBytes"):
        parse_config({**base, "grpc": {"maxRequestBytes": 1}})


def multi(*specs: dict[str, object], xs: tuple[float, ...] = (1.0,)) -> bytes:
    examples = apis.ExampleList(
        examples=[
            Example(features=Features(feature={"x": Feature(float_list=FloatList(value=[x]))}))
            for x in xs
        ]
    )
    tasks = [
        apis.InferenceTask(model_spec=apis.ModelSpec(**spec), method_name=method)
        for spec, method in zip(specs, [CLASSIFY, REGRESS] * len(specs), strict=False)
    ]
    request = apis.MultiInferenceRequest(tasks=tasks, input=apis.Input(example_list=examples))
    return request.SerializeToString()


@given(
    xs=st.lists(st.floats(width=32, allow_nan=False), max_size=20),
    labels=st.lists(st.sampled_from(["", "canary"]), min_size=1, max_size=4),
    version=st.integers(min_value=0, max_value=2**40),
)
def test_every_task_is_sent_naming_the_version_chosen_and_the_input_is_untouched(
    xs: list[float], labels: list[str], version: int
) -> None:
    data = multi(
        *({"name": "m", "version_label": label} if label else {"name": "m"} for label in labels),
        xs=tuple(xs),
    )
    tasks, spans = read_tasks(data)
    assert [t.model_spec.version_label for t in tasks] == labels
    for task in tasks:
        task.model_spec.version.value = version
    rewritten = apis.MultiInferenceRequest.FromString(with_tasks(data, spans, tasks))
    original = apis.MultiInferenceRequest.FromString(data)
    assert [t.model_spec.version.value for t in rewritten.tasks] == [version] * len(labels)
    assert not any(t.model_spec.version_label for t in rewritten.tasks)
    assert [t.method_name for t in rewritten.tasks] == [t.method_name for t in original.tasks]
    assert rewritten.input == original.input


def routed(
    data: bytes, shadow: ShadowVersion | None = None
) -> tuple[VersionRoute | None, bytes, tuple[VersionRoute, bytes] | None]:
    """Where a MultiInference goes, what is sent, and the shadow's copy, by a serving of
    versions 1 (100%, stable) and 2 (canary) and the shadow given, all AVAILABLE."""
    router = Router(
        "m",
        Routing((WeightedVersion(1, 100, ("stable",)), WeightedVersion(2, 0, ("canary",))), shadow),
    )
    every = ModelStatus(tuple(VersionStatus(v, AVAILABLE) for v in (1, 2, 3)))
    router.model_state_changed(ModelState.of(every, 1.0))
    # Only what route() reads: no channel to TF Serving, no event loop, no shadow workers.
    gateway = GrpcGateway.__new__(GrpcGateway)
    gateway.model_name, gateway.router = "m", router
    gateway.shadow = ShadowSender.__new__(ShadowSender)
    method = next(m for m in METHODS if m.name == "MultiInference")
    call = Call("rid")
    call.request_body = data
    forwarded, copy = gateway.route(method, call, {})
    sent_to = call.shadow
    return call.version, forwarded, None if sent_to is None or copy is None else (sent_to, copy)


def route(data: bytes) -> tuple[VersionRoute | None, bytes]:
    version, forwarded, _ = routed(data)
    return version, forwarded


def test_the_shadow_gets_a_multi_inference_with_every_task_naming_the_shadow() -> None:
    version, forwarded, shadow = routed(multi({"name": "m"}, {"name": "m"}), ShadowVersion(3, 100))
    assert version is not None and version.version == 1 and sent_versions(forwarded) == [1, 1]
    assert shadow is not None and shadow[0].version == 3 and sent_versions(shadow[1]) == [3, 3]
    # A call that names its version is not copied, as over REST.
    _, _, shadow = routed(multi({"name": "m", "version_label": "stable"}), ShadowVersion(3, 100))
    assert shadow is None


def sent_versions(forwarded: bytes) -> list[int]:
    return [
        t.model_spec.version.value for t in apis.MultiInferenceRequest.FromString(forwarded).tasks
    ]


def test_a_multi_inference_goes_to_the_version_or_label_its_tasks_name_else_the_split() -> None:
    version, forwarded = route(multi({"name": "m", "version_label": "canary"}, {"name": "m"}))
    assert version is not None and version.version == 2 and sent_versions(forwarded) == [2, 2]
    one = wrappers_pb2.Int64Value(value=1)
    version, forwarded = route(multi({"name": "m"}, {"name": "m", "version": one}))
    assert version is not None and version.version == 1 and sent_versions(forwarded) == [1, 1]
    version, forwarded = route(multi({"name": "m"}, {"name": "m"}))
    assert version is not None and version.version == 1 and sent_versions(forwarded) == [1, 1]


@pytest.mark.parametrize(
    ("specs", "code", "message"),
    [
        ([{"name": "other"}, {"name": "m"}], grpc.StatusCode.NOT_FOUND, r"Latest\(other\)"),
        ([], grpc.StatusCode.NOT_FOUND, r"Latest\(\)"),
        ([{"name": "m"}, {"name": "other"}], grpc.StatusCode.INVALID_ARGUMENT, "same model name"),
        ([{"name": "m"}, {}], grpc.StatusCode.INVALID_ARGUMENT, "empty model name"),
        (
            [{"name": "m", "version_label": "canary"}, {"name": "m", "version_label": "stable"}],
            grpc.StatusCode.INVALID_ARGUMENT,
            "same model version: label canary and label stable",
        ),
    ],
)
def test_tasks_that_disagree_are_refused_as_tf_serving_refuses_them(
    specs: list[dict[str, object]], code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(_Refused, match=message) as refused:
        route(multi(*specs))
    assert refused.value.code is code
