"""The inference log record: the seed's schema field for field, its encoding, and what each
logging mode keeps of an exchange."""

from __future__ import annotations

import io
import json
import struct

import avro.io
import avro.schema
import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserving.inferencelog.record import (
    SCHEMA,
    InferenceLogDecodeError,
    InferenceLogEncoder,
    InferenceLogRecord,
    decode_record,
    encode_record,
    framed_schema_id,
)
from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving_sidecar.config import LoggingConfig, LoggingMode, ModelIdentity
from modelserving_sidecar.log.kafka.partitioner import murmur2
from modelserving_sidecar.log.policy import OversizePolicy, RedactRule
from modelserving_sidecar.log.records import SpoolRecordMaker
from tests.support.exchanges import an_exchange
from tests.support.reference_records import build_headers, build_record, build_spool_record

# A copy of the schema text in the seed (the Hopsworks inference docs), as given there.
SEED_SCHEMA_TEXT = """
    {
        "fields": [{
            "name": "modelId",
            "type": "int"
            },{
            "name": "modelName",
            "type": "string"
            },{
            "name": "modelVersion",
            "type": "int"
            },{
            "name": "requestTimestamp",
            "type": "long"
            },{
            "name": "responseHttpCode",
            "type": "int"
            },{
            "name": "inferenceRequest",
            "type": "string"
            },{
            "name": "inferenceResponse",
            "type": "string"
            }],
        "name": "inferencelog",
        "type": "record"
    }
"""

MODEL = ModelIdentity(name="mnist", version=3, model_id=17)


exchange = an_exchange


def test_schema_is_the_seeds_field_for_field():
    seed = json.loads(SEED_SCHEMA_TEXT)
    assert SCHEMA["name"] == seed["name"] == "inferencelog"
    assert SCHEMA["type"] == seed["type"] == "record"
    assert [(f["name"], f["type"]) for f in SCHEMA["fields"]] == [
        (f["name"], f["type"]) for f in seed["fields"]
    ]
    assert seed == SCHEMA


def test_value_is_plain_avro_a_seed_reader_decodes():
    record = build_record(exchange(), MODEL, LoggingMode.ALL)
    value = encode_record(record)
    # What a Hopsworks-era reader does: the seed's schema, schemaless, no prefix.
    seed_schema = fastavro.parse_schema(json.loads(SEED_SCHEMA_TEXT))
    decoded = fastavro.schemaless_reader(io.BytesIO(value), seed_schema, None)
    assert decoded == {
        "modelId": 17,
        "modelName": "mnist",
        "modelVersion": 3,
        "requestTimestamp": 1_700_000_000_123,
        "responseHttpCode": 200,
        "inferenceRequest": '{"instances": [[1.0, 2.0]]}',
        "inferenceResponse": '{"predictions": [[0.9]]}',
    }


# A record as the seed's schema writes it, byte for byte: the raw framing, which a serving
# without a schema registry keeps writing, and which every reader of the seed's era reads.
GOLDEN_RECORD = InferenceLogRecord(
    17,
    "mnist",
    3,
    1_700_000_000_123,
    200,
    '{"instances": [[1.0, 2.0]]}',
    '{"predictions": [[0.9]]}',
)
GOLDEN_VALUE = (
    b"\x22"  # modelId 17 (an int: zigzag 34, one varint byte)
    b"\x0amnist"  # modelName (length 5, zigzag 10, then UTF-8)
    b"\x06"  # modelVersion 3
    b"\xf6\xa1\xab\xfe\xf9\x62"  # requestTimestamp 1_700_000_000_123 (a long)
    b"\x90\x03"  # responseHttpCode 200 (zigzag 400)
    b'\x36{"instances": [[1.0, 2.0]]}'  # inferenceRequest (27 bytes)
    b'\x30{"predictions": [[0.9]]}'  # inferenceResponse (24 bytes)
)


def test_the_seed_schema_reads_a_golden_record_byte_for_byte():
    r = GOLDEN_RECORD
    assert encode_record(r) == GOLDEN_VALUE
    encoder = InferenceLogEncoder(r.model_id, r.model_name)
    payloads = (r.inference_request.encode(), r.inference_response.encode())
    assert encoder.encode(
        r.model_version, r.request_timestamp, r.response_http_code, *payloads
    ) == (GOLDEN_VALUE)
    # Two other readers of the seed's schema text: fastavro, and Apache avro.
    seed = json.loads(SEED_SCHEMA_TEXT)
    read = fastavro.schemaless_reader(io.BytesIO(GOLDEN_VALUE), fastavro.parse_schema(seed), None)
    assert read == r.to_avro()
    apache = avro.io.DatumReader(avro.schema.parse(SEED_SCHEMA_TEXT))
    assert apache.read(avro.io.BinaryDecoder(io.BytesIO(GOLDEN_VALUE))) == r.to_avro()
    assert decode_record(GOLDEN_VALUE) == r
    assert framed_schema_id(GOLDEN_VALUE) is None


@given(
    model_id=st.integers(1, 2**31 - 1),
    name=st.text(),
    schema_id=st.integers(0, 2**32 - 1),
)
def test_the_first_byte_tells_a_plain_record_from_a_framed_one(model_id, name, schema_id):
    record = InferenceLogRecord(model_id, name, 1, 1_700_000_000_000, 200, "", "")
    assert framed_schema_id(encode_record(record)) is None
    assert framed_schema_id(encode_record(record, confluent_schema_id=schema_id)) == schema_id


def test_confluent_framing_is_an_option():
    record = build_record(exchange(), MODEL, LoggingMode.ALL)
    value = encode_record(record, confluent_schema_id=42)
    assert value[:5] == b"\x00\x00\x00\x00\x2a"
    assert value[5:] == encode_record(record)
    assert decode_record(value, confluent=True) == record
    with pytest.raises(InferenceLogDecodeError):
        decode_record(encode_record(record), confluent=True)


@given(
    model_id=st.integers(-(2**31), 2**31 - 1),
    name=st.text(),
    version=st.integers(-(2**31), 2**31 - 1),
    ts=st.integers(-(2**63), 2**63 - 1),
    code=st.integers(100, 599),
    request=st.text(),
    response=st.text(),
)
def test_any_record_decodes_back_as_written(model_id, name, version, ts, code, request, response):
    record = InferenceLogRecord(model_id, name, version, ts, code, request, response)
    assert decode_record(encode_record(record)) == record


def test_garbage_is_refused_with_a_decode_error():
    with pytest.raises(InferenceLogDecodeError):
        decode_record(b"\xff\xff\xff")
    good = encode_record(build_record(exchange(), MODEL, LoggingMode.ALL))
    with pytest.raises(InferenceLogDecodeError):
        decode_record(good + b"extra")


def test_modes_keep_what_hopsworks_kept():
    ex = exchange()
    assert build_record(ex, MODEL, LoggingMode.NONE) is None
    both = build_record(ex, MODEL, LoggingMode.ALL)
    assert both.inference_request and both.inference_response
    predictions = build_record(ex, MODEL, LoggingMode.PREDICTIONS)
    assert predictions.inference_request == ""
    assert predictions.inference_response == both.inference_response
    inputs = build_record(ex, MODEL, LoggingMode.MODEL_INPUTS)
    assert inputs.inference_response == ""
    assert inputs.inference_request == both.inference_request


def test_version_that_answered_wins_and_bad_utf8_is_replaced():
    record = build_record(
        exchange(model_version=7, request_body=b"\xff{}", status=404), MODEL, LoggingMode.ALL
    )
    assert record.model_version == 7
    assert record.inference_request == "\ufffd{}"
    assert record.response_http_code == 404


def test_key_and_headers_carry_request_id_trace_caller_version_role_pod_and_protocol():
    settings = LoggingConfig(mode=LoggingMode.ALL, topic="t", bootstrap_servers="k:9092")
    traced = exchange(model_version=4, tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    spooled = build_spool_record(traced, MODEL, settings, pod="mnist-abc")
    assert spooled.key == b"01J0REQ"
    assert spooled.timestamp_ms == 1_700_000_000_123
    assert dict(spooled.headers) == {
        "request-id": b"01J0REQ",
        "traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        "caller": b"team-a",
        "model-version": b"4",
        "role": b"stable",
        "pod": b"mnist-abc",
        "protocol": b"rest",
    }
    anonymous = build_headers(exchange(caller=None, traceparent=None), 3, "p")
    assert [name for name, _ in anonymous] == [
        "request-id",
        "model-version",
        "role",
        "pod",
        "protocol",
    ]
    shadow = build_spool_record(
        exchange(model_version=5, role="shadow"), MODEL, settings, pod="mnist-abc"
    )
    assert (dict(shadow.headers)["role"], dict(shadow.headers)["model-version"]) == (
        b"shadow",
        b"5",
    )


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 999),
    st.text(),
    st.text(),
    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
)
def test_the_pipelines_encoder_writes_the_same_bytes_as_fastavro(
    version, ts, code, request, response, schema_id
):
    record = InferenceLogRecord(17, "mnïst", version, ts, code, request, response)
    encoder = InferenceLogEncoder(17, "mnïst", schema_id)
    fast = encoder.encode(version, ts, code, request.encode(), response.encode())
    assert fast == encode_record(record, schema_id)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"mode": LoggingMode.PREDICTIONS},
        {"mode": LoggingMode.MODEL_INPUTS},
        {"mode": LoggingMode.ERRORS, "confluent_schema_id": 7},
        {"max_payload_bytes": 10, "oversize_payload": OversizePolicy.DIGEST},
        {"max_payload_bytes": 30, "mode": LoggingMode.PREDICTIONS},  # some under, some over
        {"redact": (RedactRule("instances[*]"),)},
    ],
)
@given(
    body=st.binary(max_size=60) | st.just(b'{"instances": [[1.0, 2.0]]}'),
    version=st.one_of(st.none(), st.integers(0, 9)),
    caller=st.one_of(st.none(), st.sampled_from(["team-a", "bob"])),
    traceparent=st.one_of(st.none(), st.just("00-ab-cd-01")),
    tracestate=st.one_of(st.none(), st.just("rojo=1")),
)
def test_the_pipelines_record_maker_gives_what_build_spool_record_gives(
    settings, body, version, caller, traceparent, tracestate
):
    config = LoggingConfig(
        **{"mode": LoggingMode.ALL, "topic": "t", "bootstrap_servers": "k:9092", **settings}
    )
    ex = exchange(
        request_body=body,
        response_body=body[::-1],
        model_version=version,
        caller=caller,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    maker = SpoolRecordMaker(MODEL, config, "mnist-abc")
    assert maker.make(ex) == build_spool_record(ex, MODEL, config, "mnist-abc")


@given(st.binary(max_size=80))
def test_keys_go_to_the_partition_kafkas_default_partitioner_picks(key):
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    assert murmur2(key) == aiokafka_murmur2(key)


@pytest.mark.parametrize(
    "policy",
    [
        {"oversize_payload": OversizePolicy.TRUNCATE},
        {"oversize_payload": OversizePolicy.DIGEST},
        {"redact": (RedactRule("inputs.y"),)},  # the whole text is redacted, then cut
    ],
    ids=["truncate", "digest", "redacted"],
)
def test_an_oversize_grpc_call_is_recorded_as_the_rest_call_with_the_same_input(policy):
    values = [i * 0.25 for i in range(3000)]
    shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=len(values))])
    packed = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape,
        tensor_content=b"".join(struct.pack("<f", v) for v in values),
    )
    request = apis.PredictRequest(
        model_spec=apis.ModelSpec(name="mnist"), inputs={"x": packed, "y": packed}
    )
    answer = apis.PredictResponse(outputs={"z": packed})
    settings = LoggingConfig(
        mode=LoggingMode.ALL,
        topic="t",
        bootstrap_servers="k:9092",
        max_payload_bytes=5000,
        **policy,
    )
    maker = SpoolRecordMaker(MODEL, settings, "mnist-abc")
    over_grpc = maker.make(
        exchange(
            request_body=request.SerializeToString(),
            response_body=answer.SerializeToString(),
            grpc_method="Predict",
        )
    )
    # The REST call's bodies as a client's json.dumps writes them.
    over_rest = maker.make(
        exchange(
            request_body=json.dumps({"inputs": {"x": values, "y": values}}).encode(),
            response_body=json.dumps({"outputs": values}).encode(),
        )
    )
    assert len(request.SerializeToString()) > 5000  # over the limit as protobuf too
    assert decode_record(over_grpc.value) == decode_record(over_rest.value)
    headers = dict(over_grpc.headers)
    assert {k: v for k, v in over_rest.headers if k != "protocol"} == {
        k: v for k, v in headers.items() if k != "protocol"
    }
    assert headers["payload"] in (
        b"request=cut,response=cut",
        b"request=digest,response=digest",
        b"request=redacted+cut,response=cut",
    )
