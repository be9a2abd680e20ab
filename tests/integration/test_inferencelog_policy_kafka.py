"""What the inference log keeps, against the real broker: key and headers match the answers'
X-Request-Id, the caller is named and no credential reaches the topic, mode ERRORS logs only
errors, sampling by request id holds its rate and its choices, an oversized payload is cut with
a header saying so, redacted values never reach the topic, and a body the rules cannot be applied
to (not JSON) is left out unless the spec says `nonJson: keep`."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import aiohttp
import prometheus_client

from modelserving import api
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import LoggedInference, read_inference_log
from modelserving.inferencelog.record import HEADER_CALLER, HEADER_PAYLOAD, HEADER_REQUEST_ID
from modelserving_operator.render.config_maps import render_sidecar_config
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.app import create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import (
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    ServingIdentity,
    SidecarConfig,
    parse_config,
)
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import open_inference_log
from modelserving_sidecar.main import serving
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
KEY = "policy-test-key-3f9c1e"
SECRETS = ("ada@example.com", "123-45-6789")


def sidecar(upstream: str, topic: str, bootstrap: str, tmp_path: Path, **logging):
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    return create_app(
        parse_config(
            {
                "serving": {"name": "hpt", "namespace": "demo"},
                "model": {"name": MODEL, "version": 1, "modelId": 17},
                "upstream": {"url": upstream, "timeoutSeconds": 0.5},
                "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
                "logging": {
                    "topic": topic,
                    "bootstrapServers": bootstrap,
                    "spoolDir": str(tmp_path / "spool"),
                    **logging,
                },
            }
        )
    )


def sidecar_of_spec(upstream: str, topic: str, bootstrap: str, tmp_path: Path, **logging):
    """The sidecar as the operator configures it for a serving whose spec.logging is `logging`
    (the operator's settings at their defaults), pointed at this test's upstream, keys, spool."""
    spec = ServingSpec.from_body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "hpt", "namespace": "demo", "uid": "u-1"},
            "spec": {
                "model": {"name": MODEL, "version": 1, "basePath": "s3://models/hpt"},
                "auth": {"mode": "apiKey", "apiKeys": {"secretName": "hpt-keys"}},
                "logging": {"kafka": {"topic": topic}, **logging},
            },
        }
    )
    config = render_sidecar_config(spec, OperatorSettings(kafka_bootstrap_servers=bootstrap), 17)
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    config["upstream"]["url"] = upstream
    config["auth"]["apiKeysDir"] = str(tmp_path / "keys")
    config["logging"]["spoolDir"] = str(tmp_path / "spool")
    return create_app(parse_config(config))


def with_stray_character(i: int) -> bytes:
    """A request TF Serving answers with 400 (JSON, then one character more), carrying an email."""
    body = {"instances": [{"x": 1.0, "email": f"user{i}@example.com"}]}
    return json.dumps(body).encode() + b"x"


async def send_with_stray_characters(app, count: int) -> list[int]:
    """`count` such requests; their statuses."""
    auth = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}
    statuses = []
    async with serving(app) as url, aiohttp.ClientSession() as http:
        for i in range(count):
            async with http.post(
                f"{url}/v1/models/{MODEL}:predict", data=with_stray_character(i), headers=auth
            ) as resp:
                statuses.append(resp.status)
    return statuses


async def consumed(topic: str, bootstrap: str, at_least: int) -> list[LoggedInference]:
    records: list[LoggedInference] = []

    async def enough() -> bool:
        records[:] = [
            r
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len(records) >= at_least

    await wait_for_async(enough, timeout=60, what=f"{at_least} records on {topic}", interval=0.5)
    return records


async def raw_topic_bytes(topic: str, bootstrap: str) -> bytes:
    """Every key, header and value of the topic, as bytes, to search for what must not be."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        parts = []
        for messages in batches.values():
            for m in messages:
                parts += [m.key or b"", m.value, *(n.encode() + v for n, v in m.headers)]
        return b"\n".join(parts)
    finally:
        await consumer.stop()


async def test_key_and_headers_match_the_answers_request_ids_and_nothing_secret_is_logged(
    local_env, topic, upstream, tmp_path
):
    bootstrap = local_env.kafka_bootstrap
    app = sidecar(
        upstream,
        topic,
        bootstrap,
        tmp_path,
        mode="ALL",
        maxPayloadBytes=2048,
        redact=[
            {"path": "instances[*].email", "action": "mask"},
            {"path": "instances[*].ssn", "action": "hash"},
            {"path": "signature_name", "action": "drop"},
        ],
    )
    personal = {
        "signature_name": "serving_default",
        "instances": [{"x": 1.0, "email": SECRETS[0], "ssn": SECRETS[1]}],
    }
    bodies = {
        "given-id-1": json.dumps({"instances": [1.0, 2.0]}).encode(),
        None: json.dumps({"instances": [3.0]}).encode(),  # the sidecar makes the id
        "personal": json.dumps(personal).encode(),
        "oversized": json.dumps({"instances": [1.5] * 1000}).encode(),  # ~5 KB
    }
    answers: dict[str, tuple[int, bytes]] = {}
    auth = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}
    async with serving(app) as url, aiohttp.ClientSession() as http:
        for given, body in bodies.items():
            headers = {**auth, **({"X-Request-Id": given} if given else {})}
            async with http.post(
                f"{url}/v1/models/{MODEL}:predict", data=body, headers=headers
            ) as resp:
                answers[resp.headers["X-Request-Id"]] = (resp.status, body)
                if given:
                    assert resp.headers["X-Request-Id"] == given

    records = await consumed(topic, bootstrap, len(bodies))
    assert sorted(r.key for r in records) == sorted(answers)
    by_key = {r.key: r for r in records}
    for request_id, (status, _) in answers.items():
        logged = by_key[request_id]
        assert logged.headers[HEADER_REQUEST_ID] == request_id
        assert logged.headers[HEADER_CALLER] == "team-a"
        assert logged.record.response_http_code == status
    assert HEADER_PAYLOAD not in by_key["given-id-1"].headers
    assert by_key["given-id-1"].record.inference_request == bodies["given-id-1"].decode()
    # The oversized request is still logged: cut to the limit, and the header says so.
    oversized = by_key["oversized"]
    assert oversized.headers[HEADER_PAYLOAD] == "request=cut,response=cut"
    assert len(oversized.record.inference_request.encode()) == 2048
    assert bodies["oversized"].decode().startswith(oversized.record.inference_request)
    # Redacted: masked, hashed, dropped; the rest of the payload as sent.
    redacted = by_key["personal"]
    assert redacted.headers[HEADER_PAYLOAD] == "request=redacted"
    logged_request = json.loads(redacted.record.inference_request)
    assert logged_request["instances"][0]["email"] == "***"
    assert logged_request["instances"][0]["ssn"].startswith("sha256:")
    assert "signature_name" not in logged_request and logged_request["instances"][0]["x"] == 1.0

    everything = await raw_topic_bytes(topic, bootstrap)
    for secret in (KEY, hash_api_key(KEY), *SECRETS):
        assert secret.encode() not in everything, f"{secret!r} reached the topic"


async def test_with_a_rule_and_nonjson_unset_a_body_that_is_not_json_puts_no_email_on_the_topic(
    local_env, topic, upstream, tmp_path
):
    bootstrap = local_env.kafka_bootstrap
    topic = f"demo.{topic}"  # a topic the spec names starts with the serving's namespace
    app = sidecar_of_spec(
        upstream,
        topic,
        bootstrap,
        tmp_path,
        redact=[{"path": "instances[*].email", "action": "mask"}],
    )

    statuses = await send_with_stray_characters(app, 20)

    assert statuses == [400] * 20  # TF Serving refuses them; the log still has each exchange
    records = await consumed(topic, bootstrap, 20)
    assert len(records) == 20
    for logged in records:
        assert logged.headers[HEADER_PAYLOAD] == "request=dropped"  # why the payload is empty
        assert logged.record.inference_request == ""
        assert logged.record.response_http_code == 400
        assert "error" in json.loads(logged.record.inference_response)
    everything = await raw_topic_bytes(topic, bootstrap)
    assert b"@example.com" not in everything, "an email reached the topic"


async def test_with_nonjson_keep_written_in_the_spec_such_a_body_is_logged_as_it_came(
    local_env, topic, upstream, tmp_path
):
    bootstrap = local_env.kafka_bootstrap
    topic = f"demo.{topic}"  # a topic the spec names starts with the serving's namespace
    app = sidecar_of_spec(
        upstream,
        topic,
        bootstrap,
        tmp_path,
        payloads={"nonJson": "keep"},
        redact=[{"path": "instances[*].email", "action": "mask"}],
    )

    statuses = await send_with_stray_characters(app, 20)

    assert statuses == [400] * 20
    records = await consumed(topic, bootstrap, 20)
    logged_requests = sorted(r.record.inference_request for r in records)
    assert logged_requests == sorted(with_stray_character(i).decode() for i in range(20))
    assert all(HEADER_PAYLOAD not in r.headers for r in records)  # nothing was done to them


async def test_errors_mode_logs_a_404_a_400_and_an_upstream_timeout_and_nothing_else(
    local_env, topic, standin, tmp_path
):
    server, upstream = standin
    bootstrap = local_env.kafka_bootstrap
    app = sidecar(upstream, topic, bootstrap, tmp_path, mode="ERRORS")
    auth = {"Authorization": f"ApiKey {KEY}"}
    good = b'{"instances": [1.0]}'
    statuses = []
    async with serving(app) as url, aiohttp.ClientSession() as http:

        async def post(path: str, body: bytes, headers=auth) -> None:
            async with http.post(url + path, data=body, headers=headers) as resp:
                statuses.append(resp.status)

        predict = f"/v1/models/{MODEL}:predict"
        await post(predict, good)
        await post(f"/v1/models/{MODEL}/versions/99:predict", good)  # TF Serving: no version 99
        await post(predict, b"{not json")
        await post(predict, good, headers={})  # refused: no model was asked, never logged
        server.delay_seconds = 2.0  # longer than the sidecar's 0.5 s upstream timeout
        try:
            await post(predict, good)
        finally:
            server.delay_seconds = 0.0
        await post(predict, good)
    assert statuses == [200, 404, 400, 401, 504, 200]

    records = await consumed(topic, bootstrap, 3)
    assert sorted(r.record.response_http_code for r in records) == [400, 404, 504]
    for logged in records:
        assert logged.record.inference_request  # ERRORS keeps request and answer
        assert "error" in json.loads(logged.record.inference_response)


async def test_a_10_percent_rate_over_5000_requests_logs_8_to_12_percent_the_same_ids_each_time(
    local_env, topic, tmp_path
):
    bootstrap = local_env.kafka_bootstrap
    config = SidecarConfig(
        serving=ServingIdentity(name="hpt", namespace="demo"),
        model=ModelIdentity(name=MODEL, version=1, model_id=17),
        logging=replace(
            LoggingConfig(mode=LoggingMode.ALL, topic=topic, bootstrap_servers=bootstrap),
            spool_dir=str(tmp_path / "spool"),
            success_sample_rate=0.1,
            error_sample_rate=0.1,
        ),
    )
    ids = [str(uuid.uuid4()) for _ in range(5000)]
    registry = prometheus_client.CollectorRegistry()

    def exchange(request_id: str, attempt: int) -> Exchange:
        return Exchange(
            request_id=request_id,
            received_ms=int(time.time() * 1000),
            status=(200, 200, 200, 503)[hash(request_id) % 4],
            request_body=b'{"instances":[1]}',
            response_body=f'{{"predictions":[{attempt}]}}'.encode(),
            model_version=1,
            caller="team-a",
            traceparent=None,
        )

    async with open_inference_log(config, registry) as sink:
        for attempt in (1, 2):  # every request sent twice, as a client retrying would
            for request_id in ids:
                sink.submit(exchange(request_id, attempt))

    expected = {i for i in ids if config.logging.policy().sampled(i, 200)}
    assert 400 <= len(expected) <= 600  # 8 % to 12 % of 5,000
    records = await consumed(topic, bootstrap, 2 * len(expected))
    logged = [r.key for r in records]
    assert set(logged) == expected
    assert all(logged.count(k) == 2 for k in expected), "a retried request sampled differently"

    def metric(name: str, **labels) -> float:
        value = registry.get_sample_value(f"modelserving_inference_log_{name}", labels)
        return value or 0.0

    seen = metric("requests_seen_total", outcome="success") + metric(
        "requests_seen_total", outcome="error"
    )
    out = metric("requests_sampled_out_total", outcome="success") + metric(
        "requests_sampled_out_total", outcome="error"
    )
    assert seen == 10_000
    assert out == 10_000 - 2 * len(expected)
    assert metric("records_logged_total") == 2 * len(expected)
    print(
        f"\n10 % sampling: {len(expected)} of 5000 request ids logged ({len(expected) / 50:.1f} %)"
    )
