"""The operator's own calls to the Kubernetes API: read, create, server-side apply, delete, status.

A small asyncio client on aiohttp with the credentials of the pod's ServiceAccount
or the kubeconfig (found by `modelserving.kube_access`), a cap on concurrent
requests (the client-side rate limit) and a timeout per request, so handlers never
block kopf's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from modelserving import api
from modelserving.kube_access import ApiServer, from_environment
from modelserving_operator.metrics import ApiWrites

FIELD_MANAGER = "modelserving-operator"
OWN_ATTEMPTS = 3  # reads and tries of taking over created fields (see KubeClient.apply)

# kind -> (API prefix, plural, namespaced): the kinds the operator reads and writes.
KINDS: dict[str, tuple[str, str, bool]] = {
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    # The ModelServing CRD, whose annotation is the modelId counter (modelids).
    "CustomResourceDefinition": (
        "/apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
    api.KIND: (f"/apis/{api.API_VERSION}", api.PLURAL, True),
}


class KubeError(RuntimeError):
    """The API server refused a request or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def request_failure(exc: BaseException) -> str:
    """What went wrong with a request, in words that may go to Events, status and logs: the
    error's class, with its status and message. Never `repr` of an aiohttp error: a
    ClientResponseError's request_info holds the request's headers, the bearer token among
    them (the `str` of the others names at most the host, the URL and the OS's words)."""
    name, words = type(exc).__name__, str(exc)
    if isinstance(exc, aiohttp.ClientResponseError):
        name += f" (status {exc.status})" if exc.status else ""
        words = exc.message
    return f"{name}: {words}" if words else name


def object_path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
    prefix, plural, namespaced = KINDS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class KubeClient:
    """Requests to one API server; create with `connect()` and close with `close()`."""

    def __init__(self, server: ApiServer, concurrency: int, timeout: float) -> None:
        self._server = server
        self._concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.writes = ApiWrites()  # counted for the operator's metrics

    @classmethod
    def connect(cls, concurrency: int, timeout: float) -> KubeClient:
        """Credentials of the pod's ServiceAccount, else of the kubeconfig ($KUBECONFIG)."""
        return cls(from_environment(), concurrency, timeout)

    @property
    def server(self) -> ApiServer:
        return self._server

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
        headers = {**await self._server.headers(), "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._limit:
            try:
                async with self._session.request(
                    method,
                    self._server.url + path,
                    data=data,
                    params=params,
                    headers=headers,
                    ssl=self._server.ssl_context,
                ) as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.writes.count(method, path, content_type, 0)
                raise KubeError(0, f"{method} {path}: {request_failure(exc)}") from None
        self.writes.count(method, path, content_type, response.status)
        if response.status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise KubeError(response.status, message)
        return json.loads(text) if text else {}

    async def get(
        self, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.request("GET", object_path(kind, name, namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create (POST), the fields set recorded as this operator's (an Update entry of its
        managedFields). What an apply that creates does, for about a quarter less of the API
        server's CPU (no read before, no merge of field sets): a thousand servings' children
        are created at once. `apply` makes those fields applied ones before it changes them."""
        meta = manifest["metadata"]
        return await self.request(
            "POST",
            object_path(manifest["kind"], None, meta.get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER},
        )

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply, taking over fields someone changed by hand (force). An object
        `create` made has its fields taken as applied first, so that the apply removes those
        the manifest no longer sets (fields set by an Update stay when an apply omits them)."""
        await self._own_created_fields(manifest)
        meta = manifest["metadata"]
        return await self.request(
            "PATCH",
            object_path(manifest["kind"], meta["name"], meta.get("namespace")),
            body=manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def _own_created_fields(self, manifest: Mapping[str, Any]) -> None:
        """Turn this operator's Update entry of the live object's managedFields (left by
        `create`) into an Apply entry: the same fields, now the applier's. A read, and a write
        only for an object created so and not applied since; nothing when it does not exist."""
        meta = manifest["metadata"]
        path = object_path(manifest["kind"], meta["name"], meta.get("namespace"))
        for attempt in range(OWN_ATTEMPTS):
            live = await self.get(manifest["kind"], meta["name"], meta.get("namespace"))
            entries = (live or {}).get("metadata", {}).get("managedFields") or []
            ours = [(i, e) for i, e in enumerate(entries) if e.get("manager") == FIELD_MANAGER]
            created = [i for i, e in ours if e.get("operation") == "Update"]
            if not created or any(e.get("operation") == "Apply" for _, e in ours):
                return
            # The tests: the entry is still ours and still where it was read. The API server
            # sorts the entries by time, so another manager's write may move it (then, again).
            entry = f"/metadata/managedFields/{created[0]}"
            try:
                await self.request(
                    "PATCH",
                    path,
                    body=[
                        {"op": "test", "path": f"{entry}/manager", "value": FIELD_MANAGER},
                        {"op": "test", "path": f"{entry}/operation", "value": "Update"},
                        {"op": "replace", "path": f"{entry}/operation", "value": "Apply"},
                    ],
                    content_type="application/json-patch+json",
                )
                return
            except KubeError as exc:  # 422: a test failed
                if exc.status != 422 or attempt == OWN_ATTEMPTS - 1:
                    raise

    async def delete(
        self,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
    ) -> None:
        """Delete the object, gone already or not; with `resource_version`, only as it was
        then (the API server's precondition: 409 if it has changed since)."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if resource_version is not None:
            body["preconditions"] = {"resourceVersion": resource_version}
        try:
            await self.request("DELETE", object_path(kind, name, namespace), body=body)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def write_status(
        self, kind: str, name: str, namespace: str, uid: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write the whole status of the object of this uid, never of another made anew under
        its name: a JSON patch whose `test` of metadata.uid the API server checks before it
        writes (422 otherwise). A merge patch's metadata.uid is no such check on the status
        subresource: the API server writes whichever object holds the name, keeping its uid."""
        patch = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": dict(status)},
        ]
        return await self.request(
            "PATCH",
            object_path(kind, name, namespace) + "/status",
            body=patch,
            content_type="application/json-patch+json",
        )

    async def merge_patch(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        patch: Mapping[str, Any],
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            object_path(kind, name, namespace),
            body=patch,
            content_type="application/merge-patch+json",
        )
