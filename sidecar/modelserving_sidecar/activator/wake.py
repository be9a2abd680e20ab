"""The wake: a serving that holds requests and has no usable pod is asked for one replica
(its Deployment's scale, 0 -> 1), at most once per `interval` seconds per serving, with a Normal
Event on its ModelServing saying how many requests were held. A serving already asked for (its
scale above 0: a pod is starting) is not asked again; the activator never scales down.

The scale is written on the condition that it has not changed since it was read (its
resourceVersion), so that a wake never undoes what the operator's autoscaler wrote meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from modelserving_sidecar.activator.cluster import ApiError, Cluster
from modelserving_sidecar.activator.hosts import Serving, ServingRef

log = logging.getLogger(__name__)

WAKE_REASON = "Woken"


class WakeLimiter:
    """At most one wake per serving per `interval` seconds."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[ServingRef, float] = {}

    def wait_seconds(self, ref: ServingRef) -> float:
        """Seconds until the serving may be woken again (0 or less: now)."""
        last = self._last.get(ref)
        return 0.0 if last is None else last + self.interval - self._clock()

    def take(self, ref: ServingRef) -> bool:
        """Whether the serving may be woken now; if so, the wake is counted from now."""
        if self.wait_seconds(ref) > 0:
            return False
        self._last[ref] = self._clock()
        return True


class Waker:
    """Wakes the servings that hold requests, one task per serving while it does.

    `held` and `usable` say how many requests a serving holds and whether it has a usable pod;
    `serving` what the activator knows of it; `woken` is told each wake's result (scaled,
    already_scaled, failed) for metrics."""

    def __init__(
        self,
        cluster: Cluster,
        limiter: WakeLimiter,
        held: Callable[[ServingRef], int],
        usable: Callable[[ServingRef], bool],
        serving: Callable[[ServingRef], Serving | None],
        woken: Callable[[ServingRef, str], None],
    ) -> None:
        self._cluster = cluster
        self._limiter = limiter
        self._held = held
        self._usable = usable
        self._serving = serving
        self._woken = woken
        self._tasks: dict[ServingRef, asyncio.Task[None]] = {}

    def wanted(self, ref: ServingRef) -> None:
        """A request is held for the serving: wake it unless that is in hand."""
        if ref not in self._tasks:
            self._tasks[ref] = asyncio.create_task(self._until_usable(ref))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _until_usable(self, ref: ServingRef) -> None:
        # Again every interval while requests wait: a wake may fail, or the serving be sent
        # back to zero before its pod was ready.
        try:
            while self._held(ref) and not self._usable(ref):
                if self._limiter.take(ref):
                    self._woken(ref, await self._wake(ref))
                else:
                    await asyncio.sleep(self._limiter.wait_seconds(ref))
        finally:
            self._tasks.pop(ref, None)

    async def _wake(self, ref: ServingRef) -> str:
        held = self._held(ref)
        try:
            for _ in range(3):  # a scale changed between our read and write: read it again
                scale = await self._cluster.read_scale(ref)
                if int((scale.get("spec") or {}).get("replicas") or 0) > 0:
                    return "already_scaled"
                try:
                    await self._cluster.write_scale(scale, 1)
                    break
                except ApiError as exc:
                    if exc.status != 409:
                        raise
            else:
                return "failed"
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("waking %s: its Deployment's scale could not be set to 1: %s", ref, exc)
            return "failed"
        requests = f"{held} request{'s' if held != 1 else ''} held"
        log.info("woke %s: its Deployment scaled from 0 to 1, %s", ref, requests)
        serving = self._serving(ref)
        if serving is not None:
            message = (
                f"Scaled from zero by the activator: Deployment {ref.name} asked for 1 replica, "
                f"{requests}"
            )
            try:
                await self._cluster.post_event(serving, WAKE_REASON, message)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning("the Event of %s's wake could not be posted: %s", ref, exc)
        return "scaled"
