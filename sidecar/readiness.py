"""Readiness: TF Serving reports this pod's model AVAILABLE; asked at most once a second."""

from __future__ import annotations

import asyncio
import json
import time

from modelserving.sidecar.errors import SidecarError
from modelserving.sidecar.proxy import Upstream

# Kubelet and load balancers probe often; TF Serving is asked at most this often.
CACHE_SECONDS = 1.0


def model_available(status_body: bytes) -> bool:
    """Whether a TF Serving model status answer has a version in state AVAILABLE."""
    try:
        versions = json.loads(status_body).get("model_version_status") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(v, dict) and v.get("state") == "AVAILABLE" for v in versions)


class ModelReadiness:
    def __init__(self, upstream: Upstream, model_name: str) -> None:
        self._upstream = upstream
        self._path = f"/v1/models/{model_name}"
        self._ready = False
        self._checked = -CACHE_SECONDS
        self._lock = asyncio.Lock()

    async def ready(self) -> bool:
        if time.monotonic() - self._checked < CACHE_SECONDS:
            return self._ready
        async with self._lock:  # probes arriving together share one question to TF Serving
            if time.monotonic() - self._checked >= CACHE_SECONDS:
                self._ready = await self._ask()
                self._checked = time.monotonic()
        return self._ready

    async def _ask(self) -> bool:
        try:
            answer = await self._upstream.forward("GET", self._path)
        except SidecarError:
            return False
        return answer.status == 200 and model_available(answer.body)
