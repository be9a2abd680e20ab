"""One request must never stop the log (the security review's poison requests), through the
real sidecar process on the real broker, in both durability modes: with a redaction rule (so
JSON payloads are parsed for the log), a REST body of 100,000 `[` and a gRPC Predict of a
tensor of 1,200 dimensions are answered as TF Serving answers them, and the requests after them
are answered 200 and logged; the poison's own records are there, their payloads marked
unencodable with the reason, and no raw bytes of them reach the topic."""

from __future__ import annotations

import json

import aiohttp
import grpc
import pytest

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import HEADER_PAYLOAD
from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.grpc.gateway import HTTP_STATUS
from tests.support.grpc_sidecars import (
    CLIENT_OPTIONS,
    GOOD,
    KEY,
    MODEL,
    grpc_sidecar,
    log_all,
    predict_request,
)
from tests.support.hostile_payloads import POISON, RANK_1200
from tests.support.waiting import wait_for_async

REST_HEADERS = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}
RULE = [{"path": "instances[*].ssn", "action": "mask"}]


@pytest.mark.parametrize("durability", ["buffered", "spooled"])
async def test_the_poison_requests_are_logged_as_unencodable_and_the_log_goes_on(
    local_env, topic, tmp_path, durability
):
    logging = {**log_all(local_env, topic, tmp_path), "redact": RULE, "durability": durability}
    answered: dict[str, int] = {}  # request id -> the HTTP code the record should hold
    async with (
        grpc_sidecar(tmp_path, logging=logging) as setup,
        aiohttp.ClientSession() as http,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        predict = f"{setup.sidecar.url}/v1/models/{MODEL}:predict"
        stub = PredictionServiceStub(channel)

        async def rest(body: bytes) -> int:
            rid = f"rest-{len(answered)}"
            headers = {**REST_HEADERS, "X-Request-Id": rid}
            async with http.post(predict, data=body, headers=headers) as resp:
                answered[rid] = resp.status
                return resp.status

        async def over_grpc(message: bytes) -> grpc.StatusCode:
            rid = f"grpc-{len(answered)}"
            request = apis.PredictRequest.FromString(message)
            try:
                await stub.Predict(request, metadata=(*GOOD, ("x-request-id", rid)), timeout=10)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            else:
                code = grpc.StatusCode.OK
            answered[rid] = HTTP_STATUS[code]
            return code

        good = predict_request([1.0, 2.0]).SerializeToString()
        assert await rest(b'{"instances": [1.0, 2.0]}') == 200
        assert await over_grpc(good) is grpc.StatusCode.OK
        assert await rest(POISON) == 400  # TF Serving's parse error
        rank_1200 = apis.PredictRequest.FromString(RANK_1200)
        rank_1200.model_spec.name = MODEL
        deep = rank_1200.SerializeToString()
        assert await over_grpc(deep) is grpc.StatusCode.INVALID_ARGUMENT
        after = [await rest(b'{"instances": [1.0, 2.0]}') for _ in range(5)]
        after += [await over_grpc(good) for _ in range(5)]
        assert after == [200] * 5 + [grpc.StatusCode.OK] * 5
        async with http.get(f"{setup.sidecar.url}/healthz") as healthz:
            assert healthz.status == 200, await healthz.text()

    records = {}

    async def all_logged() -> bool:
        async for logged in read_inference_log(
            topic, local_env.kafka_bootstrap, InferenceLogQuery(from_beginning=True)
        ):
            records[logged.key] = logged
        return len(records) >= len(answered)

    await wait_for_async(all_logged, timeout=60, what="every answered request's record")
    assert {key: r.record.response_http_code for key, r in records.items()} == answered
    marked = {k for k, r in records.items() if "unencodable" in r.headers.get(HEADER_PAYLOAD, "")}
    assert marked == {"rest-2", "grpc-3"}
    assert json.loads(records["rest-2"].record.inference_request) == {
        "unencodable": "JSON nested too deeply to parse"
    }
    # No "b64": a rule applies, so the raw protobuf stays out of the topic.
    assert json.loads(records["grpc-3"].record.inference_request) == {
        "unencodable": "a tensor of 1200 dimensions; TF Serving takes at most 254"
    }
    assert json.loads(records["rest-4"].record.inference_request) == {"instances": [1.0, 2.0]}
    assert json.loads(records["grpc-13"].record.inference_request) == {"inputs": {"x": [1.0, 2.0]}}
