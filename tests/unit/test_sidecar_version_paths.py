"""Requests to a serving of several versions, in one process with the TF Serving stand-in and a
recording inference log: labels resolved by the sidecar (TF Serving knows none of them),
explicit versions and unknown labels as TF Serving answers them, the record's version and role,
the shadow's copy, and the routing file refused at start when bad and kept when a bad one
replaces it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import yaml

from modelserving_sidecar.app import MODEL_STATE, ROUTER, create_app, open_authenticator
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import ConfigError, SidecarConfig, parse_config
from modelserving_sidecar.errors import SidecarError
from modelserving_sidecar.main import serving
from tests.support.recording_log import RecordingLog
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)
from tests.support.waiting import wait_for_async

MODEL = "fraud"
ROUTING = {
    "versions": [
        {"version": 3, "weight": 100, "labels": ["stable"]},
        {"version": 4, "weight": 0, "labels": ["canary", "next"]},
    ],
    "shadow": {"version": 5, "percent": 100, "labels": ["dark"]},
}


def config(upstream: str) -> SidecarConfig:
    return parse_config(
        {
            "serving": {"name": MODEL, "namespace": "demo"},
            "model": {"name": MODEL, "version": 3, "modelId": 5},
            "upstream": {"url": upstream, "timeoutSeconds": 5},
            "auth": {"mode": "none"},
        }
    )


@asynccontextmanager
async def sidecar(
    tmp_path: Path, routing: dict
) -> AsyncIterator[tuple[str, TFServingStandIn, RecordingLog, Path]]:
    model = StandInModel({v: StandInVersion(slope=0.0, intercept=float(v)) for v in (3, 4, 5)})
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(routing))
    log = RecordingLog()
    async with running_standin(TFServingStandIn({MODEL: model})) as (standin, upstream):
        app = create_app(config(upstream), inference_log=log.factory(), routing_file=routing_file)
        async with serving(app) as url:

            async def looked() -> bool:  # TF Serving's versions are known: the shadow's too
                return app[ROUTER].table.available == {3, 4, 5}

            await wait_for_async(looked, timeout=10, what="the first look at TF Serving")
            yield url, standin, log, routing_file


async def post(url: str, path: str) -> tuple[int, dict, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/models/{MODEL}{path}", json={"instances": [0.0]}) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.copy()


async def test_labels_are_resolved_by_the_sidecar_and_explicit_versions_bypass_the_split(
    tmp_path,
):
    async with sidecar(tmp_path, ROUTING) as (url, standin, log, _):
        for path, version in (
            ("/labels/canary", 4),
            ("/labels/next", 4),
            ("/labels/dark", 5),
            ("/versions/4", 4),
            ("", 3),
        ):
            status, body, headers = await post(url, f"{path}:predict")
            assert (status, body, headers["x-model-version"]) == (
                200,
                {"predictions": [float(version)]},
                str(version),
            )
            sent = [
                r.path
                for r in standin.forwarded
                if r.headers["X-Request-Id"] == headers["X-Request-Id"]
            ]
            assert sent[0] == f"/v1/models/{MODEL}/versions/{version}:predict"
        # A label the routing does not name goes to TF Serving as it came: its answer, its code.
        status, body, headers = await post(url, "/labels/blue:predict")
        assert (status, body) == (404, {"error": "Unrecognized servable version label: blue"})
        assert "x-model-version" not in headers
        status, body, headers = await post(url, "/versions/9:predict")
        not_found = f"Servable not found for request: Specific({MODEL}, 9)"
        assert (status, body) == (404, {"error": not_found})
        assert "x-model-version" not in headers
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/v1/models/{MODEL}/labels/canary") as resp,
        ):
            assert [v["version"] for v in (await resp.json())["model_version_status"]] == ["4"]

        async def shadow_logged() -> bool:
            return any(e.role == "shadow" for e in log.exchanges)

        await wait_for_async(shadow_logged, timeout=5, what="the shadow's record")
    main = [(e.model_version, e.role) for e in log.exchanges if e.role != "shadow"]
    assert main == [
        (4, "canary"),
        (4, "canary"),
        (5, "dark"),
        (4, "canary"),
        (3, "stable"),
        (3, "stable"),
        (9, "stable"),
    ]
    # Only the request the split served was copied to the shadow, under its request id.
    split_request = log.exchanges[4].request_id
    shadow = [e for e in log.exchanges if e.role == "shadow"]
    assert [(e.request_id, e.model_version, e.response_body) for e in shadow] == [
        (split_request, 5, b'{"predictions": [5.0]}')
    ]


async def test_a_bad_routing_file_fails_the_start_and_a_bad_change_is_not_taken(tmp_path, caplog):
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text("versions: [{version: 3, weight: 90}]\n")
    app = create_app(config("http://127.0.0.1:9"), routing_file=routing_file)
    with pytest.raises(ConfigError, match="the weights sum to 90, not 100"):
        async with serving(app):
            pass
    async with sidecar(tmp_path, ROUTING) as (url, _, _, routing_file):
        routing_file.write_text("versions: [{version: 4, weight: 50}]\n")
        with caplog.at_level(logging.ERROR, "modelserving_sidecar.routing.router"):

            async def refused() -> bool:
                return "the routing in use is kept" in caplog.text

            await wait_for_async(refused, timeout=10, what="the bad routing file to be refused")
        status, _, headers = await post(url, ":predict")
        assert (status, headers["x-model-version"]) == (200, "3")


async def test_sticky_by_caller_keeps_each_api_key_on_one_version(tmp_path):
    keys = tmp_path / "apikeys"
    keys.mkdir()
    callers = {f"team-{i}": f"key-of-team-{i}" for i in range(4)}
    for name, key in callers.items():
        (keys / name).write_text(hash_api_key(key))
    model = StandInModel({v: StandInVersion(slope=0.0, intercept=float(v)) for v in (3, 4)})
    halves = {"versions": [{"version": 3, "weight": 50}, {"version": 4, "weight": 50}]}

    async def versions_by_caller(sticky: dict) -> dict[str, set[str]]:
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(yaml.safe_dump({**halves, "sticky": sticky}))
        async with running_standin(TFServingStandIn({MODEL: model})) as (_, upstream):
            settings = parse_config(
                {
                    "serving": {"name": MODEL, "namespace": "demo"},
                    "model": {"name": MODEL, "version": 3, "modelId": 5},
                    "upstream": {"url": upstream},
                    "auth": {"mode": "apiKey", "apiKeysDir": str(keys)},
                }
            )
            app = create_app(settings, routing_file=routing_file)
            async with serving(app) as url, aiohttp.ClientSession() as http:

                async def looked() -> bool:
                    return app[ROUTER].table.available == {3, 4}

                await wait_for_async(looked, timeout=10, what="the first look at TF Serving")
                seen: dict[str, set[str]] = {name: set() for name in callers}
                for name, key in callers.items():
                    for _ in range(24):  # all 24 on one version by chance: 1 in 8 million
                        async with http.post(
                            f"{url}/v1/models/{MODEL}:predict",
                            json={"instances": [0.0]},
                            headers={"Authorization": f"ApiKey {key}"},
                        ) as resp:
                            seen[name].add(resp.headers["x-model-version"])
                return seen

    sticky = await versions_by_caller({"by": "caller"})
    assert all(len(versions) == 1 for versions in sticky.values()), sticky
    # Not sticky, the same callers' requests are spread over both versions.
    spread = await versions_by_caller({"by": "none"})
    assert all(versions == {"3", "4"} for versions in spread.values()), spread


async def test_no_api_server_for_token_reviews_is_a_503_and_an_auth_error_not_a_crash(tmp_path):
    settings = parse_config(
        {
            "serving": {"name": MODEL, "namespace": "demo"},
            "model": {"name": MODEL, "version": 3, "modelId": 5},
            "auth": {"mode": "kubernetes", "kubeconfig": str(tmp_path / "no-kubeconfig")},
        }
    )
    async with open_authenticator(settings) as authenticator:
        health = authenticator.health()
        with pytest.raises(SidecarError) as refused:
            await authenticator.authenticate("Bearer some-token")
    assert not health.ready
    assert health.error.startswith("no Kubernetes API server to review tokens with: ")
    assert str(tmp_path / "no-kubeconfig") in health.error
    assert refused.value.status == 503


async def test_with_no_weighted_version_available_the_caller_gets_tf_servings_own_error(tmp_path):
    model = StandInModel({v: StandInVersion(slope=0.0, intercept=float(v)) for v in (3, 4)})
    model.hold_loading(3)
    model.fail_load(4)
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(
        yaml.safe_dump({"versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]})
    )
    async with running_standin(TFServingStandIn({MODEL: model})) as (_, upstream):
        app = create_app(config(upstream), routing_file=routing_file)
        async with serving(app) as url, aiohttp.ClientSession() as http:
            await app[MODEL_STATE].look()
            answers = set()
            for _ in range(30):
                status, body, _ = await post(url, ":predict")
                answers.add((status, body["error"]))
            async with http.get(f"{url}/readyz") as resp:
                ready = resp.status
    assert answers <= {
        (404, f"Servable not found for request: Specific({MODEL}, {v})") for v in (3, 4)
    }
    assert ready == 503
