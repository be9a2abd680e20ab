"""Predictions through the real sidecar end up in the real Kafka topic: one Avro record per
answered request (errors included), keyed by the request id the caller got; refusals are not."""

from __future__ import annotations

import json

import aiohttp

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import HEADER_CALLER
from modelserving_sidecar.app import create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.main import serving
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
KEY = "log-test-key"


async def test_each_answered_prediction_is_one_record_keyed_by_its_request_id(
    local_env, topic, upstream, tmp_path
):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    config = parse_config(
        {
            "serving": {"name": "hpt", "namespace": "demo", "projectId": 80},
            "model": {"name": MODEL, "version": 1, "modelId": 17},
            "upstream": {"url": upstream},
            "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
            "logging": {
                "mode": "ALL",
                "topic": topic,
                "bootstrapServers": local_env.kafka_bootstrap,
                "spoolDir": str(tmp_path / "spool"),
            },
        }
    )
    good = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}
    sent = {}
    async with serving(create_app(config)) as url, aiohttp.ClientSession() as http:
        path = f"{url}/hopsworks-api/api/project/80/models/{MODEL}:predict"
        for body, headers in (
            (b'{"instances": [1.0, 2.0]}', good),
            (b"{broken", good),
            (b'{"instances": [3.0]}', {}),  # no key: refused, not logged
        ):
            async with http.post(path, data=body, headers=headers) as resp:
                sent[resp.headers["X-Request-Id"]] = (resp.status, body, await resp.read())
    assert [status for status, _, _ in sent.values()] == [200, 400, 401]

    records = []

    async def logged():
        records[:] = [
            r
            async for r in read_inference_log(
                topic, local_env.kafka_bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len(records) >= 2

    await wait_for_async(logged, timeout=60, what="the records in Kafka", interval=0.5)
    assert len(records) == 2
    for logged_record in records:
        status, body, answer = sent[logged_record.key]
        record = logged_record.record
        assert (record.model_id, record.model_name, record.model_version) == (17, MODEL, 1)
        assert record.response_http_code == status
        assert record.inference_request == body.decode()
        assert json.loads(record.inference_response) == json.loads(answer)
        assert logged_record.headers[HEADER_CALLER] == "team-a"
