"""The operator's own calls to the Kubernetes API: read, server-side apply, delete, status.

A small asyncio client on aiohttp with the credentials of the kubeconfig or the
pod's ServiceAccount, a cap on concurrent requests (the client-side rate limit)
and a timeout per request, so handlers never block kopf's event loop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from modelserving import api

FIELD_MANAGER = "modelserving-operator"

# kind -> (API prefix, plural, namespaced): the kinds the operator reads and writes.
KINDS: dict[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    api.KIND: (f"/apis/{api.API_VERSION}", api.PLURAL, True),
}


class KubeError(RuntimeError):
    """The API server refused a request or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """Requests to one API server; create with `connect()` and close with `close()`."""

    def __init__(
        self,
        host: str,
        ssl_context: ssl.SSLContext | bool,
        headers: Mapping[str, str],
        concurrency: int,
        timeout: float,
        refresh: Any = None,
    ) -> None:
        self._host = host.rstrip("/")
        self._ssl = ssl_context
        self._headers = dict(headers)
        self._concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._refresh = refresh
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def connect(cls, concurrency: int, timeout: float) -> KubeClient:
        """Credentials of the pod's ServiceAccount, else of the kubeconfig ($KUBECONFIG)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        return cls(
            configuration.host,
            _ssl_context(configuration),
            _auth_headers(configuration),
            concurrency,
            timeout,
            refresh=configuration,
        )

    async def close(self) -> None:
        if self._session:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        if self._session is None:
            # As many connections as requests run at once (each TLS connection holds buffers).
            connector = aiohttp.TCPConnector(limit=self._concurrency)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        headers = {**self._headers, **self._fresh_auth(), "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._limit:
            try:
                async with self._session.request(
                    method, self._host + path, data=data, params=params, headers=headers,
                    ssl=self._ssl,
                ) as response:  # fmt: skip
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(0, f"{method} {path}: {exc!r}") from exc
        if response.status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise KubeError(response.status, message)
        return json.loads(text) if text else {}

    def _fresh_auth(self) -> dict[str, str]:
        # In a pod the ServiceAccount token rotates; the kubernetes Configuration re-reads it.
        configuration = self._refresh
        if configuration is not None and configuration.refresh_api_key_hook:
            configuration.refresh_api_key_hook(configuration)
            return _auth_headers(configuration)
        return {}

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return await self.request("GET", object_path(kind, name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply, taking over fields someone changed by hand (force)."""
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            object_path(manifest["kind"], meta["name"], meta.get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            await self.request(
                "DELETE",
                object_path(kind, name, namespace),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any], *, status=False
    ) -> dict[str, Any]:
        path = object_path(kind, name, namespace) + ("/status" if status else "")
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _auth_headers(configuration: Any) -> dict[str, str]:
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if not token:
        return {}
    prefix = configuration.api_key_prefix.get("authorization", "")
    value = token if token.lower().startswith("bearer") else f"{prefix or 'Bearer'} {token}"
    return {"Authorization": value.strip()}
