"""The activator's calls to the Kubernetes API server, as itself (`modelserving.kube_access`:
its service account in a pod, a kubeconfig elsewhere): list and watch a collection, read and
write a Deployment's scale, and post an Event. Its RBAC is exactly these: modelservings and pods
list and watch, deployments/scale get and update, events create.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from modelserving import api
from modelserving.kube_access import ApiServer
from modelserving_sidecar.activator.hosts import Serving, ServingRef

log = logging.getLogger(__name__)

# A watch the API server ends after this long (it would after its own default of 30-60 min):
# a watch that went quiet because a connection died unseen is noticed this soon.
WATCH_SECONDS = 300
# How many objects one page of a list holds.
LIST_PAGE = 500
COMPONENT = "modelserving-activator"


class ApiError(Exception):
    """The API server refused or failed a call: its status and what it said."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion a watch started from is too old; list again."""


class Cluster:
    """The API server, through one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, server: ApiServer) -> None:
        self._session = session
        self._server = server

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = await self._server.headers()
        async with self._session.request(
            method, self._server.url + path, json=body, headers=headers, allow_redirects=False
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(resp.status, _status_message(text))
            answer: dict[str, Any] = json.loads(text)
            return answer

    async def list(self, path: str, params: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
        """Every object of a collection, page by page; and the list's resourceVersion, where a
        watch of it starts."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {**params, "limit": str(LIST_PAGE), **({"continue": token} if token else {})}
            page = await self._request("GET", f"{path}?{_query(query)}")
            items += page.get("items") or []
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, meta.get("resourceVersion") or ""

    async def watch(
        self, path: str, params: dict[str, str], resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The events of a collection from a resourceVersion, as (type, object), bookmarks
        included (their object carries the new resourceVersion); Gone when it is too old. Ends
        when the API server ends the watch."""
        query = {
            **params,
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        headers = await self._server.headers()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
        async with self._session.get(
            f"{self._server.url}{path}?{_query(query)}",
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            if resp.status >= 300:
                error = _status_message(await resp.text())
                raise (Gone if resp.status == 410 else ApiError)(resp.status, error)
            pending = b""
            # Lines split by hand: an object (a pod with its annotations) can be longer than
            # aiohttp's readline takes.
            async for chunk in resp.content.iter_any():
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line, pending = pending[:end], pending[end + 1 :]
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type") or "", event.get("object") or {}
                    if kind == "ERROR":
                        code = int(obj.get("code") or 500)
                        raise (Gone if code == 410 else ApiError)(code, obj.get("message") or "")
                    yield kind, obj

    async def read_scale(self, ref: ServingRef) -> dict[str, Any]:
        return await self._request("GET", _scale_path(ref))

    async def write_scale(self, scale: dict[str, Any], replicas: int) -> dict[str, Any]:
        """Set a scale read before to `replicas`, on the condition that nobody changed it since
        (its resourceVersion): 409 when someone did."""
        meta = scale.get("metadata") or {}
        ref = ServingRef(meta.get("namespace") or "", meta.get("name") or "")
        body = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": ref.name,
                "namespace": ref.namespace,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "spec": {"replicas": replicas},
        }
        return await self._request("PUT", _scale_path(ref), body)

    async def post_event(self, serving: Serving, reason: str, message: str) -> None:
        """A Normal Event on the ModelServing, as `kubectl describe` shows it."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ref = serving.ref
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": serving.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", f"/api/v1/namespaces/{ref.namespace}/events", event)


def servings_path(namespace: str = "") -> str:
    base = f"/apis/{api.GROUP}/{api.VERSION}"
    return f"{base}/namespaces/{namespace}/{api.PLURAL}" if namespace else f"{base}/{api.PLURAL}"


def pods_path(namespace: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"


def _scale_path(ref: ServingRef) -> str:
    return f"/apis/apps/v1/namespaces/{ref.namespace}/deployments/{ref.name}/scale"


def _query(params: dict[str, str]) -> str:
    return urlencode(params)


def _status_message(text: str) -> str:
    """A Status's message, or the start of whatever else the API server said."""
    try:
        return str(json.loads(text).get("message") or text[:300])
    except (ValueError, AttributeError):
        return text[:300]
