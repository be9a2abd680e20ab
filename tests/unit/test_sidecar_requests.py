"""The sidecar's request path over HTTP: the real sidecar in front of the TF Serving stand-in,
with API keys in a directory laid out as kubelet mounts a Secret, and a recording inference log."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from modelserving_sidecar.app import create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import SidecarConfig, parse_config
from modelserving_sidecar.main import serving
from modelserving_sidecar.routing.paths import canonical_path
from tests.support import examples
from tests.support.ports import free_port
from tests.support.recording_log import RecordingLog
from tests.support.sidecar_configs import sidecar_config, with_sections
from tests.support.tfserving_standin import StandInModel, TFServingStandIn, running_standin
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
KEY = "s3cr3t-key-for-tests"
GOOD = {"Authorization": f"ApiKey {KEY}"}
LIMIT = 64 * 1024


def write_keys(directory: Path, keys: dict[str, str], generation: int = 1) -> None:
    """Key files as kubelet writes a Secret volume: a timestamped dir, `..data`, and links."""
    directory.mkdir(exist_ok=True)
    real = directory / f"..2026_01_01_00_00_0{generation}.000"
    real.mkdir()
    for name, key in keys.items():
        (real / name).write_text(hash_api_key(key))
    tmp = directory / "..data_tmp"
    tmp.symlink_to(real.name)
    tmp.replace(directory / "..data")
    for name in keys:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def make_config(upstream_url: str, keys_dir: Path, **sections) -> SidecarConfig:
    data = sidecar_config(
        upstream_url,
        serving={"projectId": 80},
        model={"name": MODEL},
        upstream={"timeoutSeconds": 2},
        limits={"maxRequestBytes": LIMIT},
        auth={"mode": "apiKey", "apiKeysDir": str(keys_dir)},
    )
    return parse_config(with_sections(data, **sections))


@asynccontextmanager
async def sidecar(config: SidecarConfig, log: RecordingLog | None = None) -> AsyncIterator[str]:
    app = create_app(config, inference_log=log.factory() if log else None)
    async with serving(app) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def standin() -> AsyncIterator[tuple[TFServingStandIn, str]]:
    models = {MODEL: StandInModel(versions=(1, 2), labels={"stable": 1, "canary": 2})}
    async with running_standin(TFServingStandIn(models)) as running:
        yield running


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("apikeys")
    write_keys(directory, {"team-a": KEY})
    return directory


@pytest.fixture(scope="module")
def inference_log() -> RecordingLog:
    return RecordingLog()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sidecar_url(standin, keys_dir, inference_log) -> AsyncIterator[str]:
    async with sidecar(make_config(standin[1], keys_dir), inference_log) as url:
        yield url


async def call(http, method, url, **kwargs) -> tuple[int, dict, aiohttp.typedefs.CIMultiDictProxy]:
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.read()
        try:
            data = json.loads(body)
        except ValueError:
            data = {"raw": body.decode(errors="replace")}
        return resp.status, data, resp.headers


# --- predictions through every path --------------------------------------------------------------


async def test_predict_in_row_format_answers_tf_servings_predictions(
    sidecar_url, http, standin, inference_log
):
    body = json.dumps({"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]})
    status, data, headers = await call(
        http, "POST", f"{sidecar_url}/v1/models/{MODEL}:predict", data=body, headers=GOOD
    )
    assert status == 200
    assert data == {"predictions": [2.5, 3.0, 4.5]}
    request_id = headers["X-Request-Id"]
    assert len(request_id) == 36
    assert headers["x-model-version"] == "1"
    forwarded = standin[0].forwarded[-1]
    # The split chose the one version there is (model.version: no routing file here).
    assert forwarded.path == f"/v1/models/{MODEL}/versions/1:predict"
    assert "Authorization" not in forwarded.headers
    assert forwarded.headers["X-Request-Id"] == request_id
    logged = next(e for e in inference_log.exchanges if e.request_id == request_id)
    assert logged.status == 200
    assert logged.request_body == body.encode()
    assert json.loads(logged.response_body) == data
    assert logged.caller == "team-a"
    assert logged.model_version == 1


async def test_predict_in_columnar_format_answers_outputs(sidecar_url, http):
    status, data, _ = await call(
        http,
        "POST",
        f"{sidecar_url}/v1/models/{MODEL}:predict",
        json={"inputs": {"x": [[1.0], [4.0]]}},
        headers=GOOD,
    )
    assert (status, data) == (200, {"outputs": [[2.5], [4.0]]})


@pytest.mark.parametrize(
    "path",
    [
        f"/hopsworks-api/api/project/demo/models/{MODEL}:predict",
        f"/hopsworks-api/api/project/80/models/{MODEL}:predict",
        f"/hopsworks-api/api/project/demo/inference/models/{MODEL}:predict",
        f"/hopsworks-api/api/project/80/inference/models/{MODEL}:predict",
        f"/v1/models/{MODEL}/versions/2:predict",
        f"/v1/models/{MODEL}/labels/canary:predict",
    ],
)
async def test_hopsworks_and_versioned_paths_predict(sidecar_url, http, standin, path):
    status, data, _ = await call(
        http, "POST", sidecar_url + path, json={"instances": [2.0]}, headers=GOOD
    )
    assert (status, data) == (200, {"predictions": [3.0]})
    expected = path if path.startswith("/v1/") else f"/v1/models/{MODEL}/versions/1:predict"
    assert standin[0].forwarded[-1].path == expected


@pytest.mark.parametrize("verb, expected", [("classify", [[["", 3.0]]]), ("regress", [3.0])])
async def test_classify_and_regress(sidecar_url, http, verb, expected):
    for path in (
        f"/v1/models/{MODEL}:{verb}",
        f"/hopsworks-api/api/project/demo/models/{MODEL}:{verb}",
    ):
        status, data, _ = await call(
            http, "POST", sidecar_url + path, json={"examples": [{"x": 2.0}]}, headers=GOOD
        )
        assert (status, data) == (200, {"results": expected})


@pytest.mark.parametrize(
    "path, expected",
    [
        (f"/v1/models/{MODEL}", ["2", "1"]),
        (f"/v1/models/{MODEL}/versions/1", ["1"]),
        (f"/v1/models/{MODEL}/labels/canary", ["2"]),
    ],
)
async def test_model_status(sidecar_url, http, path, expected):
    status, data, _ = await call(http, "GET", sidecar_url + path, headers=GOOD)
    assert status == 200
    assert [v["version"] for v in data["model_version_status"]] == expected
    assert {v["state"] for v in data["model_version_status"]} == {"AVAILABLE"}


async def test_model_metadata(sidecar_url, http):
    status, data, _ = await call(
        http, "GET", f"{sidecar_url}/v1/models/{MODEL}/versions/2/metadata", headers=GOOD
    )
    assert status == 200
    assert data["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}


# --- errors, in TF Serving's words ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path, message",
    [
        ("/v1/models/mnist:predict", "Servable not found for request: Latest(mnist)"),
        (
            "/v1/models/mnist/versions/3:predict",
            "Servable not found for request: Specific(mnist, 3)",
        ),
        (
            "/hopsworks-api/api/project/demo/models/mnist:predict",
            "Servable not found for request: Latest(mnist)",
        ),
        (
            "/hopsworks-api/api/project/other/models/half_plus_two:predict",
            "Project not found: other",
        ),
        ("/v1/nothing/here", "Not Found"),
        ("/", "Not Found"),
    ],
)
async def test_paths_of_no_route_here_are_404_in_tf_servings_words(
    sidecar_url, http, path, message
):
    status, data, headers = await call(http, "POST", sidecar_url + path, json={}, headers=GOOD)
    assert (status, data) == (404, {"error": message})
    assert headers["X-Request-Id"]


async def test_version_tf_serving_does_not_have_is_its_own_404(sidecar_url, http):
    status, data, _ = await call(
        http, "POST", f"{sidecar_url}/v1/models/{MODEL}/versions/7:predict", json={}, headers=GOOD
    )
    assert (status, data) == (
        404,
        {"error": f"Servable not found for request: Specific({MODEL}, 7)"},
    )


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", f"/v1/models/{MODEL}:predict"),
        ("PUT", f"/v1/models/{MODEL}:regress"),
        ("POST", f"/v1/models/{MODEL}"),
        ("DELETE", f"/v1/models/{MODEL}/metadata"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405(sidecar_url, http, method, path):
    status, data, headers = await call(http, method, sidecar_url + path, headers=GOOD)
    assert status == 405
    assert "not allowed" in data["error"]
    assert headers["Allow"]


async def test_malformed_json_gets_tf_servings_400_unchanged(sidecar_url, http, standin):
    status, data, _ = await call(
        http, "POST", f"{sidecar_url}/v1/models/{MODEL}:predict", data=b"{not json", headers=GOOD
    )
    assert status == 400
    assert data["error"].startswith("JSON Parse error")
    assert standin[0].forwarded[-1].body == b"{not json"


async def test_body_over_the_limit_is_413_by_content_length(sidecar_url, http, standin):
    before = len(standin[0].forwarded)
    body = b'{"instances": [' + b"1.0," * LIMIT + b"1.0]}"
    status, data, _ = await call(
        http, "POST", f"{sidecar_url}/v1/models/{MODEL}:predict", data=body, headers=GOOD
    )
    assert status == 413
    assert "limit" in data["error"]
    assert len(standin[0].forwarded) == before


async def test_body_over_the_limit_is_413_when_streamed_without_length(sidecar_url, http):
    async def chunks():
        yield b'{"instances": ['
        for _ in range(LIMIT // 1000 + 10):
            yield b"1.0," * 250
        yield b"1.0]}"

    status, _data, _ = await call(
        http, "POST", f"{sidecar_url}/v1/models/{MODEL}:predict", data=chunks(), headers=GOOD
    )
    assert status == 413


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_body_is_limited_after_decompression(sidecar_url, http, encoding):
    plain = b'{"instances": [' + b"0.0," * (4 * 1024 * 1024) + b"0.0]}"  # 16 MiB of JSON
    packed = gzip.compress(plain, 9) if encoding == "gzip" else zlib.compress(plain, 9)
    assert len(packed) < LIMIT  # small on the wire, a bomb once opened
    status, _data, _ = await call(
        http,
        "POST",
        f"{sidecar_url}/v1/models/{MODEL}:predict",
        data=packed,
        headers={**GOOD, "Content-Encoding": encoding},
    )
    assert status == 413


async def test_compressed_body_within_the_limit_is_forwarded_plain(sidecar_url, http, standin):
    status, data, _ = await call(
        http,
        "POST",
        f"{sidecar_url}/v1/models/{MODEL}:predict",
        data=gzip.compress(b'{"instances": [6.0]}'),
        headers={**GOOD, "Content-Encoding": "gzip"},
    )
    assert (status, data) == (200, {"predictions": [5.0]})
    assert standin[0].forwarded[-1].body == b'{"instances": [6.0]}'


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_body_that_does_not_decode_is_400(sidecar_url, standin, encoding):
    before = len(standin[0].forwarded)
    status, body, _ = await raw_request(
        sidecar_url,
        "POST",
        f"/v1/models/{MODEL}:predict",
        {**GOOD, "Content-Encoding": encoding},
        b"this is not compressed",
    )
    assert (status, json.loads(body)) == (
        400,
        {"error": "The request body cannot be read (bad encoding)"},
    )
    assert len(standin[0].forwarded) == before


async def test_upstream_down_is_502_and_not_ready(keys_dir, http):
    log = RecordingLog()
    async with sidecar(make_config(f"http://127.0.0.1:{free_port()}", keys_dir), log) as url:
        status, data, _ = await call(
            http, "POST", f"{url}/v1/models/{MODEL}:predict", json={"instances": [1]}, headers=GOOD
        )
        assert status == 502
        assert "not reachable" in data["error"]
        assert log.exchanges[-1].status == 502  # errors are logged too
        status, _, _ = await call(http, "GET", f"{url}/readyz")
        assert status == 503
        status, _, _ = await call(http, "GET", f"{url}/healthz")
        assert status == 200


async def test_slow_upstream_is_504(keys_dir, http):
    slow = TFServingStandIn(delay_seconds=3)
    async with running_standin(slow) as (_, upstream):
        config = make_config(upstream, keys_dir, upstream={"timeoutSeconds": 0.3})
        async with sidecar(config) as url:
            status, data, _ = await call(
                http,
                "POST",
                f"{url}/v1/models/{MODEL}:predict",
                json={"instances": [1]},
                headers=GOOD,
            )
            async with http.get(f"{url}/metrics") as resp:
                metrics = await resp.text()
    assert (status, data) == (504, {"error": "TF Serving did not answer in time"})
    # Counted under the version the request was sent to, so a slow version shows in its own
    # series (and in the error-rate alert, which groups by version).
    assert 'modelserving_sidecar_requests_total{code="504",route="predict",version="1"}' in metrics


async def test_full_inference_log_turns_predictions_away_with_503(standin, keys_dir, http):
    log = RecordingLog()
    log.full = True
    async with sidecar(make_config(standin[1], keys_dir), log) as url:
        status, data, _ = await call(
            http, "POST", f"{url}/v1/models/{MODEL}:predict", json={"instances": [1]}, headers=GOOD
        )
    assert status == 503
    assert "inference log" in data["error"]
    assert log.exchanges == []


async def test_durable_answers_leave_once_their_record_is_kept(standin, keys_dir, http):
    log = RecordingLog()
    log.written = asyncio.Event()
    config = make_config(standin[1], keys_dir, logging={"durability": "spooled"})
    async with sidecar(config, log) as url:
        answer = asyncio.create_task(
            call(
                http,
                "POST",
                f"{url}/v1/models/{MODEL}:predict",
                json={"instances": [1.0]},
                headers=GOOD,
            )
        )
        await asyncio.wait_for(log.awaited.wait(), 5)
        assert not answer.done(), "answered before its record was written"
        log.written.set()
        status, data, headers = await answer
    assert (status, data) == (200, {"predictions": [2.5]})
    assert [e.request_id for e in log.exchanges] == [headers["X-Request-Id"]]


async def test_durable_prediction_whose_record_cannot_be_kept_is_a_503(standin, keys_dir, http):
    log = RecordingLog()
    log.keeps = False
    config = make_config(standin[1], keys_dir, logging={"durability": "spooled"})
    async with sidecar(config, log) as url:
        status, data, headers = await call(
            http, "POST", f"{url}/v1/models/{MODEL}:predict", json={"instances": [1]}, headers=GOOD
        )
    assert status == 503
    assert data == {"error": "The inference log cannot keep this request; try again later"}
    assert headers["X-Request-Id"]


async def test_a_log_that_stopped_makes_the_sidecar_not_alive_and_says_why(keys_dir, http):
    log = RecordingLog()
    async with sidecar(make_config(f"http://127.0.0.1:{free_port()}", keys_dir), log) as url:
        assert (await call(http, "GET", f"{url}/healthz"))[0] == 200
        log.failed = "inference-log-writer failed: RecursionError: maximum recursion depth"
        status, data, _ = await call(http, "GET", f"{url}/healthz")
    assert (status, data) == (
        503,
        {
            "error": "The inference log stopped: inference-log-writer failed: RecursionError: "
            "maximum recursion depth"
        },
    )


# --- request ids, probes and metrics -------------------------------------------------------------


async def test_sane_request_id_is_kept_and_odd_ones_replaced(sidecar_url, http):
    path = f"{sidecar_url}/v1/models/{MODEL}:predict"
    _, _, headers = await call(
        http, "POST", path, json={"instances": [1]}, headers={**GOOD, "X-Request-Id": "abc-123"}
    )
    assert headers["X-Request-Id"] == "abc-123"
    for odd in ("a" * 300, "two words", "semi;colon"):
        _, _, headers = await call(http, "POST", path, headers={"X-Request-Id": odd})
        assert headers["X-Request-Id"] != odd
        assert len(headers["X-Request-Id"]) == 36


async def test_probes_and_metrics_need_no_credential(sidecar_url, http):
    assert (await call(http, "GET", f"{sidecar_url}/healthz"))[0] == 200
    status, data, _ = await call(http, "GET", f"{sidecar_url}/readyz")
    assert (status, data) == (200, {"status": "ready"})
    predict = f"{sidecar_url}/v1/models/{MODEL}:predict"
    await call(http, "POST", predict, json={"instances": [1]}, headers=GOOD)
    await call(http, "POST", predict, json={"instances": [1]})  # no key
    async with http.get(f"{sidecar_url}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert 'modelserving_sidecar_requests_total{code="200",route="predict",version="1"}' in text
    assert 'modelserving_sidecar_requests_total{code="200",route="readyz",version=""}' in text
    assert 'modelserving_sidecar_auth_results_total{mode="apiKey",result="unauthenticated"}' in text
    assert (
        'modelserving_sidecar_upstream_duration_seconds_count{route="predict",version="1"}' in text
    )
    assert "modelserving_sidecar_request_duration_seconds_bucket" in text


async def raw_exchange(url: str, head: str, body: bytes | None) -> tuple[bytes, bytes]:
    """Send a request head, read what comes back first, then send `body` (if any) and read the
    rest: what curl does with `Expect: 100-continue`."""
    host, port = URL(url).host, URL(url).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode())
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        rest = b""
        if body is not None:
            writer.write(body)
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        return first, rest
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_after_the_key_is_checked(sidecar_url):
    body = b'{"instances": [1.0]}'
    head = (
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n"
    )
    first, rest = await raw_exchange(
        sidecar_url, head + f"Authorization: ApiKey {KEY}\r\n\r\n", body
    )
    assert first.startswith(b"HTTP/1.1 100 Continue")
    assert rest.startswith(b"HTTP/1.1 200")
    refused, _ = await raw_exchange(sidecar_url, head + "\r\n", None)
    assert refused.startswith(b"HTTP/1.1 401")  # no body was asked for


async def test_a_plain_aiohttp_runner_serves_the_same_request_path(standin, keys_dir, http):
    app = create_app(make_config(standin[1], keys_dir))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/v1/models/{MODEL}:predict"
        assert (await call(http, "POST", url, json={"instances": [1.0]}, headers=GOOD))[:2] == (
            200,
            {"predictions": [2.5]},
        )
        assert (await call(http, "POST", url, json={"instances": [1.0]}))[0] == 401
    finally:
        await runner.cleanup()


# --- auth by API key -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "ApiKey", "ApiKey ", "Bearer " + KEY, "Basic " + KEY, "ApiKey wrong", KEY],
)
async def test_without_a_valid_key_nothing_is_answered_or_forwarded(
    sidecar_url, http, standin, authorization
):
    before = len(standin[0].forwarded)
    headers = {} if authorization is None else {"Authorization": authorization}
    status, data, resp_headers = await call(
        http,
        "POST",
        f"{sidecar_url}/v1/models/{MODEL}:predict",
        json={"instances": [1]},
        headers=headers,
    )
    assert status == 401
    assert resp_headers["WWW-Authenticate"] == 'ApiKey realm="demo/hpt"'
    assert "error" in data
    assert len(standin[0].forwarded) == before


async def test_unknown_paths_are_not_described_without_a_key(sidecar_url, http):
    status, _, _ = await call(http, "GET", f"{sidecar_url}/v1/secret/things")
    assert status == 401


async def test_keys_are_reloaded_when_the_secret_volume_changes(standin, tmp_path, http):
    keys = tmp_path / "keys"
    write_keys(keys, {"old": "old-key"})
    async with sidecar(make_config(standin[1], keys)) as url:
        path = f"{url}/v1/models/{MODEL}:predict"

        async def status_with(key: str) -> int:
            headers = {"Authorization": f"ApiKey {key}"}
            return (await call(http, "POST", path, json={"instances": [1]}, headers=headers))[0]

        assert await status_with("old-key") == 200
        assert await status_with("new-key") == 401
        write_keys(keys, {"new": "new-key"}, generation=2)
        (keys / "old").unlink()  # kubelet removes the link of a key that left the Secret

        async def new_key_accepted() -> bool:
            return await status_with("new-key") == 200

        await wait_for_async(new_key_accepted, 10, "the new key accepted")
        assert await status_with("old-key") == 401


async def test_auth_mode_none_lets_anyone_in(standin, keys_dir, http):
    async with sidecar(make_config(standin[1], keys_dir, auth={"mode": "none"})) as url:
        status, data, _ = await call(
            http, "POST", f"{url}/v1/models/{MODEL}:predict", json={"instances": [0]}
        )
    assert (status, data) == (200, {"predictions": [2.0]})


# --- paths that try to go around auth ------------------------------------------------------------


async def raw_request(
    url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes, dict[str, str]]:
    """Send exactly these bytes as the request target, which no HTTP client library would."""
    host, port = URL(url).host, URL(url).port
    reader, writer = await asyncio.open_connection(host, port)
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        "Connection: close",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return int(status_line.split()[1]), payload, got


TRICKS = [
    f"/healthz/../v1/models/{MODEL}:predict",
    f"/healthz/%2e%2e/v1/models/{MODEL}:predict",
    f"/healthz%2F..%2Fv1/models/{MODEL}:predict",
    f"/healthz%2f%2e%2e%2fv1/models/{MODEL}:predict",
    f"/metrics/..%2F..%2Fv1/models/{MODEL}:predict",
    f"//v1/models/{MODEL}:predict",
    f"/v1//models/{MODEL}:predict",
    f"/./v1/models/./{MODEL}:predict",
    f"/v1/models/{MODEL}%3Apredict",
    f"/v1/models/{MODEL}:predict/",
    f"/v1/models/{MODEL}:predict?x=/healthz",
    f"/v1/models/{MODEL}:predict#/healthz",
    f"/v1/models/{MODEL};/healthz:predict",
    f"/v1/models/{MODEL}%252F:predict",
    "/v1/models/%68alf_plus_two:predict",
    f"/healthz%00/../v1/models/{MODEL}:predict",
    f"/healthz\\..\\v1/models/{MODEL}:predict",
    f"/hopsworks-api/api/project/demo/models/../../../../v1/models/{MODEL}:predict",
    f"http://evil/v1/models/{MODEL}:predict",
    f"/v1/models/{MODEL}:predict%00",
    f"/V1/models/{MODEL}:predict",
    "/healthz/..",
    "/..",
    "/%2e%2e/healthz",
]


@pytest.mark.parametrize("target", TRICKS)
async def test_path_tricks_never_reach_tf_serving_without_a_key(sidecar_url, standin, target):
    before = len(standin[0].forwarded)
    status, body, _headers = await raw_request(
        sidecar_url, "POST", target, body=b'{"instances": [1]}'
    )
    assert status in (400, 401, 404, 405), (status, body)
    assert len(standin[0].forwarded) == before
    if status != 400 or body.startswith(b"{"):
        assert "error" in json.loads(body)


@pytest.mark.parametrize(
    "target",
    [
        f"//v1/models/{MODEL}:predict",
        f"/v1//models/{MODEL}:predict",
        f"/./v1/models/./{MODEL}:predict",
        f"/v1/models/{MODEL}%3Apredict",
        f"/v1/models/{MODEL}:predict/",
        "/v1/models/%68alf_plus_two:predict",
        f"/healthz/../v1/models/{MODEL}:predict",
    ],
)
async def test_equivalent_spellings_are_forwarded_in_canonical_form(sidecar_url, standin, target):
    status, body, _ = await raw_request(
        sidecar_url, "POST", target, headers=GOOD, body=b'{"instances": [1]}'
    )
    assert (status, json.loads(body)) == (200, {"predictions": [2.5]})
    assert standin[0].forwarded[-1].path == f"/v1/models/{MODEL}/versions/1:predict"


# --- any request at all --------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "v1",
        "models",
        MODEL,
        "mnist",
        ":predict",
        ":classify",
        "metadata",
        "versions",
        "1",
        "labels",
        "stable",
        "hopsworks-api",
        "api",
        "project",
        "demo",
        "80",
        "inference",
        "healthz",
        "readyz",
        "metrics",
        "..",
        ".",
        "",
        "%2F",
        "%2f",
        "%2e",
        "%2E%2E",
        "%5C",
        "%00",
        "%25",
        ";",
        "%3A",
        "%3Apredict",
        "?",
        "#",
        "\\",
        "%ZZ",
        "%C3%A9",
        "~",
        "@",
    ]
)
_TARGETS = st.one_of(
    st.lists(_PIECES, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.lists(_PIECES, max_size=8).map(lambda parts: "/" + "".join(parts)),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(lambda t: "/" + t),
)
_AUTHORIZATIONS = st.sampled_from(
    [None, "", "ApiKey", f"ApiKey {KEY}x", f"Bearer {KEY}", f"apikey  {KEY[:-1]}", "ApiKey \t"]
)
_PUBLIC = {"/healthz", "/readyz", "/metrics"}


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]),
    target=_TARGETS,
    authorization=_AUTHORIZATIONS,
    request_id=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126))),
    body=st.binary(max_size=256),
)
async def test_any_request_without_a_valid_key_gets_no_5xx_and_no_model(
    sidecar_url, standin, method, target, authorization, request_id, body
):
    before = len(standin[0].forwarded)
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if request_id:
        headers["X-Request-Id"] = request_id
    status, payload, got = await raw_request(sidecar_url, method, target, headers, body)
    assert status < 500, (status, payload)
    assert len(standin[0].forwarded) == before, "a request without a valid key reached TF Serving"
    if 200 <= status < 300:
        assert canonical_path(target) in _PUBLIC
    if status != 400 or "X-Request-Id" in got:  # aiohttp's own parser errors come before ours
        assert got["X-Request-Id"]


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT"]),
    target=_TARGETS,
    body=st.one_of(st.binary(max_size=128), st.just(b'{"instances": [1.0]}')),
    encoding=st.sampled_from([None, "gzip", "deflate", "identity", "gzip, deflate"]),
    compress=st.booleans(),
)
async def test_any_request_with_a_valid_key_gets_no_5xx(
    sidecar_url, method, target, body, encoding, compress
):
    headers = dict(GOOD)
    if encoding:
        headers["Content-Encoding"] = encoding
        if compress and encoding == "gzip":
            body = gzip.compress(body)
    status, payload, _ = await raw_request(sidecar_url, method, target, headers, body)
    assert status < 500, (status, payload)


# --- concurrency, for the autoscaler ------------------------------------------------------------

CONCURRENCY_ONLY = (
    "/metrics?name[]=modelserving_sidecar_requests_in_flight"
    "&name[]=modelserving_sidecar_request_concurrency_seconds_total"
)


def _sample(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def test_requests_in_flight_and_their_integral_are_what_a_scrape_of_them_alone_shows(
    keys_dir, http
):
    """The autoscaler's reading: requests held now, and request-seconds held so far, asked for
    alone with `name[]`; probes and scrapes are not counted."""
    slow = TFServingStandIn({MODEL: StandInModel(versions=(1,))}, delay_seconds=0.5)
    async with (
        running_standin(slow) as (_, upstream),
        sidecar(make_config(upstream, keys_dir)) as url,
    ):
        predict = f"{url}/v1/models/{MODEL}:predict"
        calls = [
            asyncio.ensure_future(
                call(http, "POST", predict, json={"instances": [1]}, headers=GOOD)
            )
            for _ in range(5)
        ]

        async def five_held() -> bool:
            await call(http, "GET", f"{url}/healthz")
            async with http.get(url + CONCURRENCY_ONLY) as resp:
                text = await resp.text()
            return _sample(text, "modelserving_sidecar_requests_in_flight") == 5

        await wait_for_async(five_held, 10, "five requests in flight")
        assert [status for status, _, _ in await asyncio.gather(*calls)] == [200] * 5
        async with http.get(url + CONCURRENCY_ONLY) as resp:
            text = await resp.text()
    assert _sample(text, "modelserving_sidecar_requests_in_flight") == 0
    # Five requests each held at least the model's 0.5 s.
    assert _sample(text, "modelserving_sidecar_request_concurrency_seconds_total") >= 2.5
    assert "modelserving_sidecar_requests_total" not in text  # the other families not built
