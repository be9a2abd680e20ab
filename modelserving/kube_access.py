"""How the operator and the sidecar reach the Kubernetes API server as themselves: its URL, the
TLS context that trusts it, and the bearer token to send, read again as it rotates.

In a pod that is its service account (KUBERNETES_SERVICE_HOST/_PORT, the mounted CA and the
projected token); outside one, as in local runs and tests, a kubeconfig.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
# The kubelet renews a projected token at 80% of its life (an hour by default) and the old one
# stays valid until it expires; reading the file again every minute, as client-go does, is
# soon enough. A kubeconfig's expiring credentials (exec plugins) are renewed 5 min early by
# the kubernetes client, so asking it every minute is soon enough too.
TOKEN_REREAD_SECONDS = 60.0


class NoApiServer(RuntimeError):
    """No pod's service account and no usable kubeconfig says where the API server is."""


class BearerToken:
    """A token that may change: read once when made, then again when the last read is older
    than `reread_seconds` (never when None). Reads after the first run in a thread, off the
    event loop, as they touch the disk (or run a kubeconfig's credential plugin)."""

    def __init__(
        self,
        read: Callable[[], str | None],
        reread_seconds: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.reread_seconds = reread_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._value = read()
        self._read_at = clock()

    @classmethod
    def from_file(
        cls,
        path: Path,
        reread_seconds: float = TOKEN_REREAD_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> BearerToken:
        return cls(lambda: path.read_text().strip() or None, reread_seconds, clock=clock)

    def _due(self) -> bool:
        seconds = self.reread_seconds
        return seconds is not None and self._clock() - self._read_at >= seconds

    async def current(self) -> str | None:
        if self._due():
            async with self._lock:  # one read for the requests that find it due at once
                if self._due():
                    self._value = await asyncio.to_thread(self._read)
                    self._read_at = self._clock()
        return self._value


@dataclass(frozen=True)
class ApiServer:
    """Where the API server is and how to talk to it as ourselves."""

    url: str  # without a trailing slash: request paths are appended
    ssl_context: ssl.SSLContext | bool  # False for a kubeconfig's plain http:// server
    bearer_token: BearerToken

    async def token(self) -> str | None:
        return await self.bearer_token.current()

    async def headers(self) -> dict[str, str]:
        """The Authorization header of a request now (none when only a client certificate
        identifies us)."""
        token = await self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}


def from_environment(
    kubeconfig: str = "",
    *,
    environ: Mapping[str, str] = os.environ,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> ApiServer:
    """The kubeconfig named; else, in a pod, its service account; else the kubeconfig of
    $KUBECONFIG or ~/.kube/config. Blocks (reads files), so async callers run it in a thread.

    Raises NoApiServer, saying what was looked for, when none of them is there."""
    if kubeconfig:
        return _from_kubeconfig(kubeconfig)
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file, ca_file = service_account_dir / "token", service_account_dir / "ca.crt"
    if host and port and token_file.is_file() and ca_file.is_file():
        return ApiServer(
            f"https://{_join_host_port(host, port)}",
            ssl.create_default_context(cafile=str(ca_file)),
            BearerToken.from_file(token_file),
        )
    default = environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    try:
        return _from_kubeconfig(default)
    except NoApiServer as exc:
        raise NoApiServer(
            "Cannot find the Kubernetes API server: not in a pod (it needs "
            f"KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, {token_file} and {ca_file}), "
            f"and {exc}"
        ) from None


def _join_host_port(host: str, port: str) -> str:
    # An IPv6 address is bracketed in a URL, as Go's net.JoinHostPort does.
    return f"[{host}]:{port}" if ":" in host or "%" in host else f"{host}:{port}"


def _from_kubeconfig(path: str) -> ApiServer:
    # Imported here: the kubernetes package is slow to import and a pod does not need it.
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise NoApiServer(f"no usable kubeconfig at {path}: {exc}") from None
    refreshes = configuration.refresh_api_key_hook is not None
    return ApiServer(
        configuration.host.rstrip("/"),
        _kubeconfig_tls(configuration),
        BearerToken(
            lambda: _kubeconfig_token(configuration), TOKEN_REREAD_SECONDS if refreshes else None
        ),
    )


def _kubeconfig_tls(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:  # the kubeconfig's insecure-skip-tls-verify
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _kubeconfig_token(configuration: Any) -> str | None:
    # The hook renews credentials that expire (a credential plugin's) and sets them again.
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    value = (configuration.api_key.get("BearerToken") or "").strip()
    scheme, _, token = value.partition(" ")
    return (token.strip() if scheme.lower() == "bearer" else value) or None
