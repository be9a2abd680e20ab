"""Sidecar auth against the real local cluster: ServiceAccount tokens checked by TokenReview and
SubjectAccessReview (refused, then allowed by a RoleBinding), and API keys from a real Secret."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import yaml
from kubernetes import client

from modelserving_sidecar.app import AUTHENTICATOR
from modelserving_sidecar.auth.api_keys import hash_api_key, new_api_key
from modelserving_sidecar.auth.apikey_cli import secret_manifest
from modelserving_sidecar.config import SidecarConfig, parse_config
from tests.support.kube_callers import (
    AUDIENCE,
    SERVING,
    grant_predict,
    service_account_token,
    sidecar,
)
from tests.support.sidecar_configs import sidecar_config
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
PREDICT = {"instances": [1.0]}


def make_config(upstream: str, namespace: str, **auth) -> SidecarConfig:
    config = sidecar_config(
        upstream, serving={"name": SERVING, "namespace": namespace}, model={"name": MODEL}
    )
    return parse_config({**config, "auth": auth})


async def predict(url: str, authorization: str | None) -> tuple[int, dict, dict]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as http:
        path = f"{url}/v1/models/{MODEL}:predict"
        async with http.post(path, json=PREDICT, headers=headers) as resp:
            return resp.status, json.loads(await resp.read()), dict(resp.headers)


async def test_service_account_is_refused_until_a_role_binding_grants_predict(
    local_env, kube_client, namespace, upstream
):
    token = service_account_token(kube_client, namespace, "caller", AUDIENCE)
    config = make_config(
        upstream,
        namespace,
        mode="kubernetes",
        audience=AUDIENCE,
        kubeconfig=local_env.kubeconfig,
        denyCacheSeconds=0.5,
    )
    async with sidecar(config) as (_, url):
        status, body, _ = await predict(url, f"Bearer {token}")
        assert status == 403
        assert f"system:serviceaccount:{namespace}:caller" in body["error"]

        grant_predict(kube_client, namespace, "caller")

        async def allowed():
            status, body, _ = await predict(url, f"Bearer {token}")
            return status == 200 and body == {"predictions": [2.5]}

        await wait_for_async(allowed, timeout=30, what="the RoleBinding to allow predictions")


async def test_tokens_that_prove_nothing_are_401(local_env, kube_client, namespace, upstream):
    other_audience = service_account_token(kube_client, namespace, "caller", "someone-else")
    config = make_config(
        upstream, namespace, mode="kubernetes", audience=AUDIENCE, kubeconfig=local_env.kubeconfig
    )
    async with sidecar(config) as (_, url):
        for authorization in (
            None,
            "Bearer not-a-token",
            f"Bearer {other_audience}",
            f"ApiKey {other_audience}",
        ):
            status, body, headers = await predict(url, authorization)
            assert status == 401, authorization
            assert headers["WWW-Authenticate"] == f'Bearer realm="{namespace}/{SERVING}"'
            assert "error" in body


async def test_concurrent_checks_of_one_token_share_one_review_and_then_the_cache(
    local_env, kube_client, namespace, upstream
):
    grant_predict(kube_client, namespace, "caller")
    token = service_account_token(kube_client, namespace, "caller", AUDIENCE)
    config = make_config(
        upstream, namespace, mode="kubernetes", audience=AUDIENCE, kubeconfig=local_env.kubeconfig
    )
    async with sidecar(config) as (app, url):
        authenticator = app[AUTHENTICATOR]
        results = await asyncio.gather(*(predict(url, f"Bearer {token}") for _ in range(20)))
        assert {status for status, _, _ in results} == {200}
        assert authenticator.api_calls == 1
        await predict(url, f"Bearer {token}")
        assert authenticator.api_calls == 1  # allowed decisions are cached


def kubeconfig_with_server(kubeconfig: str, server: str, directory: Path) -> Path:
    """The cluster's kubeconfig, aimed at an address where no API server listens."""
    data = yaml.safe_load(Path(kubeconfig).read_text())
    for cluster in data["clusters"]:
        cluster["cluster"]["server"] = server
    path = directory / "kubeconfig"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_unreachable_api_server_is_503_and_never_cached(
    local_env, kube_client, namespace, upstream, tmp_path
):
    broken = kubeconfig_with_server(local_env.kubeconfig, "https://127.0.0.1:1", tmp_path)
    token = service_account_token(kube_client, namespace, "caller", AUDIENCE)
    config = make_config(upstream, namespace, mode="kubernetes", kubeconfig=str(broken))
    async with sidecar(config) as (app, url):
        for attempt in (1, 2):
            status, body, _ = await predict(url, f"Bearer {token}")
            assert status == 503
            assert "cannot be checked" in body["error"]
            assert app[AUTHENTICATOR].api_calls == attempt


def write_secret_volume(directory: Path, secret: client.V1Secret, generation: int) -> None:
    """Lay a Secret's data out as kubelet mounts it: a timestamped dir swapped in by `..data`."""
    directory.mkdir(exist_ok=True)
    real = directory / f"..2026_01_01_00_00_{generation:02d}.000"
    real.mkdir()
    for name, value in (secret.data or {}).items():
        (real / name).write_bytes(base64.b64decode(value))
    link = directory / "..data_tmp"
    link.symlink_to(real.name)
    link.replace(directory / "..data")
    for entry in directory.iterdir():
        if not entry.name.startswith(".") and entry.name not in (secret.data or {}):
            entry.unlink()
    for name in secret.data or {}:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_api_keys_from_a_secret_and_its_changes(kube_client, namespace, upstream, tmp_path):
    core = client.CoreV1Api(kube_client)
    first_key = new_api_key()
    manifest = secret_manifest(SERVING, namespace, "team-a", hash_api_key(first_key))
    core.create_namespaced_secret(namespace, manifest)
    name = manifest["metadata"]["name"]
    mount = tmp_path / "apikeys"
    write_secret_volume(mount, core.read_namespaced_secret(name, namespace), 1)

    config = make_config(upstream, namespace, mode="apiKey", apiKeysDir=str(mount))
    async with sidecar(config) as (_, url):
        assert (await predict(url, f"ApiKey {first_key}"))[:2] == (200, {"predictions": [2.5]})
        status, _, headers = await predict(url, None)
        assert status == 401
        assert headers["WWW-Authenticate"] == f'ApiKey realm="{namespace}/{SERVING}"'

        second_key = new_api_key()
        core.replace_namespaced_secret(
            name, namespace, secret_manifest(SERVING, namespace, "team-b", hash_api_key(second_key))
        )
        write_secret_volume(mount, core.read_namespaced_secret(name, namespace), 2)

        async def rotated():
            return (await predict(url, f"ApiKey {second_key}"))[0] == 200

        await wait_for_async(rotated, timeout=10, what="the sidecar to load the new key")
        assert (await predict(url, f"ApiKey {first_key}"))[0] == 401
