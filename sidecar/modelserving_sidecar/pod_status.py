"""A sidecar's own observations, published on its own Pod: a small JSON summary in an annotation,
written through the pods/status subresource every few seconds when it changed. The inference
log's health (`log_status`) and what TF Serving says of the model (`model_report`) are two such
summaries; the operator, which watches the serving's pods, turns them into the serving's status.

Why pods/status: it is the one place a pod's own observations belong, the operator already
watches pods, and the right to patch pods/status cannot change a pod's spec (its images), which
the right to patch pods could. The sidecar finds its pod from POD_NAME and POD_NAMESPACE (the
Downward API) and its credentials from its ServiceAccount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from modelserving.kube_access import ApiServer, NoApiServer, from_environment

log = logging.getLogger(__name__)

CHECK_SECONDS = 5.0  # how often a summary is made
REFRESH_SECONDS = 30.0  # a summary whose significant part did not change is written at most this

Summary = dict[str, Any]
# Makes the summary, and the part of it whose change is written at once (the rest, figures that
# move all the time, waits up to REFRESH_SECONDS).
SummaryMaker = Callable[[], Awaitable[tuple[Summary, object]]]


class PodAnnotationWriter:
    """Merge-patches one annotation of one pod through pods/status."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api: ApiServer,
        namespace: str,
        pod: str,
        annotation: str,
    ) -> None:
        self._session, self._api, self.annotation = session, api, annotation
        self._url = f"{api.url}/api/v1/namespaces/{namespace}/pods/{pod}/status"

    async def write(self, value: str) -> None:
        headers = {**await self._api.headers(), "Content-Type": "application/merge-patch+json"}
        patch = {"metadata": {"annotations": {self.annotation: value}}}
        async with self._session.patch(
            self._url, data=json.dumps(patch), headers=headers, ssl=self._api.ssl_context
        ) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"{resp.status}: {(await resp.text())[:200]}")


class PodStatusPublisher:
    """Writes a summary when its significant part changes, or when only its figures did at most
    every REFRESH_SECONDS; failures are logged and retried at the next check, never raised."""

    def __init__(
        self, what: str, make: SummaryMaker, writer: PodAnnotationWriter, check_seconds: float
    ) -> None:
        self.what, self.make, self.writer, self.check_seconds = what, make, writer, check_seconds
        self._written: Summary | None = None
        self._written_key: object = None
        self._written_at = 0.0

    async def publish_once(self) -> bool:
        """Check and write if due; True when a write was made."""
        summary, key = await self.make()
        now = time.monotonic()
        if self._written is not None and (
            summary == self._written
            or (key == self._written_key and now - self._written_at < REFRESH_SECONDS)
        ):
            return False
        await self.writer.write(json.dumps(summary, separators=(",", ":")))
        self._written, self._written_key, self._written_at = summary, key, now
        return True

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.publish_once()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per run of failures
                    log.warning("cannot write the pod's %s: %s", self.what, exc)
                failing = True
            await asyncio.sleep(self.check_seconds)


@contextlib.asynccontextmanager
async def publishing(
    what: str,
    annotation: str,
    make: SummaryMaker,
    kubeconfig: str = "",
    check_seconds: float = CHECK_SECONDS,
) -> AsyncIterator[PodStatusPublisher | None]:
    """Publish while the block runs, when the pod is known (POD_NAME and POD_NAMESPACE set);
    otherwise (a sidecar run outside a pod) do nothing."""
    pod, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not (pod and namespace):
        yield None
        return
    try:
        api = await asyncio.to_thread(from_environment, kubeconfig)
    except NoApiServer as exc:
        log.error("the pod's %s is not published: %s", what, exc)
        yield None
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        writer = PodAnnotationWriter(session, api, namespace, pod, annotation)
        publisher = PodStatusPublisher(what, make, writer, check_seconds)
        task = asyncio.create_task(publisher.run(), name=f"pod-status {annotation}")
        try:
            yield publisher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
