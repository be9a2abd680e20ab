"""Reaching the API server as ourselves (modelserving.kube_access): in a pod through its service
account, whose rotating token is read again; outside one through a kubeconfig; a clear error
when there is neither; and the three clients that use it send the token of the moment."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import certifi
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelserving.kube_access import (
    TOKEN_REREAD_SECONDS,
    ApiServer,
    BearerToken,
    NoApiServer,
    from_environment,
)
from modelserving_operator.kube import KubeClient
from modelserving_sidecar.auth.kubernetes_tokens import KubernetesAuthenticator
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.pod_status import PodAnnotationWriter

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
# Any valid CA bundle will do: nothing here connects over TLS.
CA_DATA = base64.b64encode(Path(certifi.where()).read_bytes()).decode()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    """The files Kubernetes mounts in a pod: its token and the cluster's CA."""
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("first-token\n")
    (directory / "ca.crt").write_bytes(Path(certifi.where()).read_bytes())
    return directory


def write_kubeconfig(path: Path, server: str, user: dict, **cluster) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def test_in_a_pod_the_service_account_is_used(service_account):
    api = from_environment(environ=IN_A_POD, service_account_dir=service_account)

    assert api.url == "https://10.96.0.1:443"
    assert isinstance(api.ssl_context, ssl.SSLContext)
    assert api.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert api.ssl_context.check_hostname
    assert await api.headers() == {"Authorization": "Bearer first-token"}
    assert api.bearer_token.reread_seconds == TOKEN_REREAD_SECONDS


def test_an_ipv6_service_host_is_bracketed(service_account):
    environ = {**IN_A_POD, "KUBERNETES_SERVICE_HOST": "fd00:10:96::1"}
    api = from_environment(environ=environ, service_account_dir=service_account)
    assert api.url == "https://[fd00:10:96::1]:443"


async def test_the_projected_token_is_read_again_once_a_minute(service_account):
    clock = Clock()
    token = BearerToken.from_file(service_account / "token", clock=clock)
    assert await token.current() == "first-token"

    (service_account / "token").write_text("second-token\n")  # the kubelet rotated it
    clock.now += TOKEN_REREAD_SECONDS - 1
    assert await token.current() == "first-token"
    clock.now += 1
    assert await token.current() == "second-token"


async def test_requests_that_find_the_token_due_at_once_share_one_read():
    clock, reads = Clock(), []

    def read() -> str:
        reads.append(clock.now)
        return f"token-{len(reads)}"

    token = BearerToken(read, 60.0, clock=clock)
    clock.now += 60
    assert set(await asyncio.gather(*(token.current() for _ in range(10)))) == {"token-2"}
    assert len(reads) == 2


async def test_outside_a_pod_the_kubeconfig_of_KUBECONFIG_is_used(tmp_path):
    kubeconfig = write_kubeconfig(
        tmp_path / "config",
        "https://127.0.0.1:6443/",
        {"token": "admin-token"},
        **{"certificate-authority-data": CA_DATA},
    )
    api = from_environment(environ={"KUBECONFIG": str(kubeconfig)}, service_account_dir=tmp_path)

    assert api.url == "https://127.0.0.1:6443"
    assert isinstance(api.ssl_context, ssl.SSLContext)
    assert api.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert await api.headers() == {"Authorization": "Bearer admin-token"}


async def test_a_kubeconfig_named_wins_over_the_pods_service_account(service_account, tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:8080", {})
    api = from_environment(str(kubeconfig), environ=IN_A_POD, service_account_dir=service_account)

    assert api.url == "http://127.0.0.1:8080"
    assert api.ssl_context is False  # plain HTTP: nothing to verify
    assert await api.headers() == {}  # no token: a client certificate, or nothing, says who


def test_a_kubeconfig_that_skips_tls_verification_is_followed(tmp_path):
    kubeconfig = write_kubeconfig(
        tmp_path / "config",
        "https://127.0.0.1:6443",
        {"token": "t"},
        **{"insecure-skip-tls-verify": True},
    )
    api = from_environment(str(kubeconfig), environ={}, service_account_dir=tmp_path)

    assert isinstance(api.ssl_context, ssl.SSLContext)
    assert api.ssl_context.verify_mode is ssl.CERT_NONE
    assert not api.ssl_context.check_hostname


def test_a_pod_without_its_token_falls_back_to_the_kubeconfig(service_account, tmp_path):
    (service_account / "token").unlink()  # automountServiceAccountToken: false
    kubeconfig = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:8080", {})
    environ = {**IN_A_POD, "KUBECONFIG": str(kubeconfig)}
    api = from_environment(environ=environ, service_account_dir=service_account)
    assert api.url == "http://127.0.0.1:8080"


def test_neither_a_pod_nor_a_kubeconfig_is_a_clear_error(tmp_path):
    absent = tmp_path / "no-such-kubeconfig"
    with pytest.raises(NoApiServer) as raised:
        from_environment(environ={"KUBECONFIG": str(absent)}, service_account_dir=tmp_path)

    message = str(raised.value)
    assert "not in a pod" in message
    assert "KUBERNETES_SERVICE_HOST" in message
    assert str(tmp_path / "token") in message
    assert f"no usable kubeconfig at {absent}" in message


def test_without_KUBECONFIG_the_home_kubeconfig_is_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(NoApiServer, match=r"kubeconfig at ~/\.kube/config"):
        from_environment(environ={}, service_account_dir=tmp_path)

    (tmp_path / ".kube").mkdir()
    write_kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:8080", {})
    assert from_environment(environ={}, service_account_dir=tmp_path).url.endswith(":8080")


def test_a_kubeconfig_named_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(NoApiServer, match=r"no usable kubeconfig at .*absent"):
        from_environment(str(tmp_path / "absent"), environ=IN_A_POD, service_account_dir=tmp_path)


# The three clients, against a stand-in API server that records the token of each request.


@pytest_asyncio.fixture
async def api_server(service_account) -> AsyncIterator[tuple[ApiServer, Clock, list[str | None]]]:
    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.path.endswith("/tokenreviews"):
            user = {"username": "system:serviceaccount:ns:caller"}
            return web.json_response({"status": {"authenticated": True, "user": user}}, status=201)
        if request.path.endswith("/subjectaccessreviews"):
            return web.json_response({"status": {"allowed": True}}, status=201)
        return web.json_response({"kind": "ConfigMap"})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    clock = Clock()
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        token = BearerToken.from_file(service_account / "token", clock=clock)
        yield ApiServer(url, False, token), clock, seen


def rotate(service_account: Path, clock: Clock) -> None:
    (service_account / "token").write_text("second-token")
    clock.now += TOKEN_REREAD_SECONDS


async def test_the_operator_sends_the_rotated_token(api_server, service_account):
    api, clock, seen = api_server
    kube = KubeClient(api, concurrency=2, timeout=5)
    try:
        await kube.get("ConfigMap", "a", "ns")
        rotate(service_account, clock)
        await kube.get("ConfigMap", "a", "ns")
    finally:
        await kube.close()
    assert seen == ["Bearer first-token", "Bearer second-token"]


async def test_the_sidecars_reviews_send_the_rotated_token(api_server, service_account):
    api, clock, seen = api_server
    config = parse_config(
        {
            "serving": {"name": "hpt", "namespace": "ns"},
            "model": {"name": "hpt", "version": 1, "modelId": 1},
            "upstream": {"url": "http://127.0.0.1:1"},
            "auth": {"mode": "kubernetes"},
        }
    )
    async with KubernetesAuthenticator.running(config, api) as authenticator:
        await authenticator.authenticate("Bearer caller-one")
        rotate(service_account, clock)
        await authenticator.authenticate("Bearer caller-two")
    assert seen == ["Bearer first-token"] * 2 + ["Bearer second-token"] * 2


async def test_the_sidecars_log_status_sends_the_rotated_token(api_server, service_account):
    api, clock, seen = api_server
    async with aiohttp.ClientSession() as session:
        writer = PodAnnotationWriter(session, api, "ns", "serving-pod", "modelserving.io/x")
        await writer.write("{}")
        rotate(service_account, clock)
        await writer.write("{}")
    assert seen == ["Bearer first-token", "Bearer second-token"]
