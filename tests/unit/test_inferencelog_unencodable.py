"""No exchange stops the inference log: a payload the log cannot make into the record's text
(JSON nested past what parses, a gRPC tensor of more dimensions than TF Serving takes, a
message that is not the method's, odd bytes in a header, a fault of the log's own) becomes a
record with the seven fields and the payload marked unencodable with the reason, and the next
exchanges are logged as ever. A pipeline task that ends anyway makes the sidecar not alive."""

from __future__ import annotations

import asyncio
import json
import math

import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelserving.inferencelog.record import decode_record
from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving_sidecar.config import LoggingConfig, LoggingMode, ModelIdentity
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.policy import NonJsonPolicy, RedactRule
from modelserving_sidecar.log.records import SpoolRecordMaker
from tests.support import examples
from tests.support.exchanges import an_exchange
from tests.support.hostile_payloads import POISON, RANK_1200
from tests.support.log_pipelines import count, pipeline_for

MODEL = ModelIdentity(name="mnist", version=3, model_id=17)
RULE = (RedactRule("instances[*].ssn"),)


def logging_config(**settings: object) -> LoggingConfig:
    return LoggingConfig(
        **{"mode": LoggingMode.ALL, "topic": "t", "bootstrap_servers": "k:9092", **settings}
    )


def exchange(request: bytes, response: bytes = b'{"predictions": [1]}', **changes) -> Exchange:
    values = {"request_id": "req-1", "traceparent": None, **changes}
    return an_exchange(request_body=request, response_body=response, **values)


TF_SERVING_REFUSAL = b'{"error": "tensor parsing error: x"}'


def test_json_nested_past_the_parser_under_a_rule_is_marked_not_raised() -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(redact=RULE), "pod")
    made = maker.make(exchange(POISON, b'{"error": "JSON Parse error"}', status=400))
    record = decode_record(made.value)
    assert (record.model_id, record.model_name, record.model_version) == (17, "mnist", 3)
    assert (record.request_timestamp, record.response_http_code) == (1_700_000_000_123, 400)
    assert json.loads(record.inference_request) == {
        "unencodable": "JSON nested too deeply to parse"
    }
    assert record.inference_response == '{"error": "JSON Parse error"}'
    assert dict(made.headers)["payload"] == b"request=unencodable"


def test_without_a_rule_the_poison_is_logged_as_it_came() -> None:
    made = SpoolRecordMaker(MODEL, logging_config(), "pod").make(exchange(POISON))
    assert decode_record(made.value).inference_request == POISON.decode()


def test_a_grpc_tensor_of_rank_1200_is_marked_with_its_bytes_where_no_rule_applies() -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(), "pod")
    made = maker.make(exchange(RANK_1200, TF_SERVING_REFUSAL, status=400, grpc_method="Predict"))
    record = decode_record(made.value)
    marker = json.loads(record.inference_request)
    assert marker["unencodable"] == "a tensor of 1200 dimensions; TF Serving takes at most 254"
    assert marker["b64"]  # nothing forbids keeping what could not be read
    assert record.inference_response == TF_SERVING_REFUSAL.decode()
    assert dict(made.headers)["payload"] == b"request=unencodable"


@pytest.mark.parametrize(
    "policy", [{"redact": RULE}, {"non_json_payload": NonJsonPolicy.DROP}], ids=["rule", "drop"]
)
def test_where_rules_or_drop_apply_an_unwritable_grpc_message_leaves_no_raw_bytes(policy) -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(**policy), "pod")
    for body in (RANK_1200, b"\x0a\x05not a message"):
        made = maker.make(exchange(body, TF_SERVING_REFUSAL, status=400, grpc_method="Predict"))
        marker = json.loads(decode_record(made.value).inference_request)
        assert set(marker) == {"unencodable"}, "the raw protobuf reached the record"


def test_header_values_that_are_not_utf8_are_replaced_not_raised() -> None:
    # aiohttp hands a header's bytes that are not UTF-8 over as surrogates.
    odd = b"00-\xff\xfe".decode("utf-8", "surrogateescape")
    made = SpoolRecordMaker(MODEL, logging_config(), "pod").make(
        exchange(b"{}", traceparent=odd, caller=odd)
    )
    headers = dict(made.headers)
    assert headers["traceparent"] == headers["caller"] == b"00-??"


def test_a_redacted_payload_with_an_escaped_lone_surrogate_stays_valid_utf8() -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(redact=RULE), "pod")
    body = b'{"instances": [{"ssn": "1", "name": "\\ud800"}]}'
    record = decode_record(maker.make(exchange(body)).value)
    assert json.loads(record.inference_request) == {"instances": [{"ssn": "***", "name": "\ud800"}]}


def test_a_fault_of_the_log_keeps_the_record_and_marks_the_payload(monkeypatch) -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(redact=RULE), "pod")

    def broken(body: bytes, part: object) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(maker._policy, "shape", broken)
    made = maker.make(exchange(b'{"instances": []}'))
    record = decode_record(made.value)
    assert record.response_http_code == 200
    for payload in (record.inference_request, record.inference_response):
        assert json.loads(payload) == {"unencodable": "the log could not make it: KeyError"}
    assert dict(made.headers)["payload"] == b"request=unencodable,response=unencodable"


# JSON as callers may send it: deep, wide, odd keys and numbers, duplicated keys, not JSON.
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "deep", "bytes", "dupe"]))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([0, 1, 300, 1200, 20_000]))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth + draw(st.binary(max_size=8))
    if kind == "dupe":
        return b'{"instances": [{"ssn": 1, "ssn": 2}]}'
    return draw(st.binary(max_size=64))


@st.composite
def _tensors(draw: st.DrawFn) -> bytes:
    # Hypothesis raises the recursion limit while it runs: ranks far past it too.
    rank = draw(st.sampled_from([0, 1, 2, 3, 254, 255, 1200, 20_000]))
    shape = [draw(st.integers(0, 3))] * rank if rank <= 3 else [1] * rank
    dtype = draw(st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT64]))
    t = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_pb2.TensorShapeProto(
            dim=[tensor_pb2.TensorShapeProto.Dim(size=s) for s in shape]
        ),
    )
    values = draw(st.sampled_from([0, 1, math.prod(shape)]))  # none, one to fill, all
    if dtype == types_pb2.DT_FLOAT:
        t.float_val.extend(draw(st.lists(st.floats(width=32), min_size=values, max_size=values)))
    elif dtype == types_pb2.DT_STRING:
        t.string_val.extend(draw(st.lists(st.binary(max_size=4), min_size=values, max_size=values)))
    else:
        t.int64_val.extend(
            draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=values, max_size=values))
        )
    message = apis.PredictRequest(inputs={"x": t}).SerializeToString()
    if draw(st.integers(0, 3)):
        return message
    return message[: draw(st.integers(0, len(message)))]  # not a whole message


POLICIES = st.sampled_from(
    [{}, {"redact": RULE}, {"non_json_payload": NonJsonPolicy.DROP}, {"max_payload_bytes": 16}]
)


def _made(body: bytes, policy: dict, grpc_method: str | None) -> None:
    maker = SpoolRecordMaker(MODEL, logging_config(**policy), "pod")
    made = maker.make(exchange(body, body, grpc_method=grpc_method))
    record = decode_record(made.value)  # valid Avro, valid UTF-8
    assert (record.model_id, record.model_name, record.response_http_code) == (17, "mnist", 200)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_payloads(), policy=POLICIES)
def test_the_record_maker_never_raises_on_what_rest_callers_send(body, policy) -> None:
    _made(body, policy, None)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_tensors(), policy=POLICIES)
def test_the_record_maker_never_raises_on_what_grpc_callers_send(body, policy) -> None:
    _made(body, policy, "Predict")


async def test_the_poison_is_logged_and_the_next_exchanges_too(tmp_path) -> None:
    registry = prometheus_client.CollectorRegistry()
    pipeline = pipeline_for(tmp_path, registry, redact=[{"path": "instances[*].ssn"}])
    await pipeline.start()
    try:
        bodies = [b'{"instances": [1]}', POISON, *[b'{"instances": [2]}'] * 5]
        kept = [
            await asyncio.wait_for(pipeline.spooled(exchange(b, request_id=f"r{i}")), 5)
            for i, b in enumerate(bodies)
        ]
        assert kept == [True] * 7
        assert pipeline.failure() is None
        assert count(registry, "records_spooled_total") == 7
        assert count(registry, "payloads_unencodable_total", part="request") == 1
    finally:
        await pipeline.close()


async def test_a_pipeline_task_that_ends_says_why_and_waiting_requests_are_answered(
    tmp_path,
) -> None:
    registry = prometheus_client.CollectorRegistry()
    pipeline = pipeline_for(tmp_path, registry)
    await pipeline.start()
    try:
        writer = next(t for t in pipeline._tasks if t.get_name() == "inference-log-writer")
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        assert pipeline.failure() == "inference-log-writer stopped"
        assert not pipeline.accepting()  # reject, the default: predictions get 503
        # A request that still comes is told its record cannot be kept, never left waiting.
        assert await asyncio.wait_for(pipeline.spooled(exchange(b"{}")), 5) is False
        assert count(registry, "records_dropped_total", reason="failed") == 1
    finally:
        await pipeline.close()
