"""The hold queue: requests for a serving with no usable pod wait here, at most `size` per
serving, until a pod is usable (released in arrival order), their deadline passes, or the
activator stops. Nothing here does I/O: the queue is futures on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from modelserving_sidecar.activator.hosts import ServingRef


class NotHeld(Exception):
    """A request the queue gives up on: answered 503 with Retry-After. `reason` labels the
    refusal in metrics."""

    reason = ""


class QueueFull(NotHeld):
    reason = "queue_full"


class HeldTooLong(NotHeld):
    reason = "held_too_long"


class Stopping(NotHeld):
    reason = "stopping"


class HoldQueues:
    """One bounded queue per serving. `on_held` is called with the serving each time a request
    is held (the wake decides whether to act on it)."""

    def __init__(
        self,
        size: int,
        on_held: Callable[[ServingRef], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("a hold queue holds at least one request")
        self.size = size
        self._on_held = on_held
        self._clock = clock
        self._queues: dict[ServingRef, deque[asyncio.Future[None]]] = {}
        # When the first request of a serving's present wait was held: wake time starts there.
        self._since: dict[ServingRef, float] = {}
        self.stopping = False

    def held(self, ref: ServingRef) -> int:
        return len(self._queues.get(ref) or ())

    def counts(self) -> dict[ServingRef, int]:
        return {ref: len(queue) for ref, queue in self._queues.items()}

    async def hold(self, ref: ServingRef, timeout: float) -> None:
        """Wait until the serving has a usable pod; QueueFull at once when its queue is full,
        HeldTooLong after `timeout` seconds, Stopping when the activator stops meanwhile."""
        if self.stopping:
            raise Stopping()
        queue = self._queues.setdefault(ref, deque())
        if len(queue) >= self.size:
            raise QueueFull()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        self._since.setdefault(ref, self._clock())
        self._on_held(ref)
        try:
            done, _ = await asyncio.wait({turn}, timeout=max(0.0, timeout))
            if not done:
                raise HeldTooLong()
            turn.result()  # Stopping, when the queue was stopped
        finally:
            if not turn.done():
                turn.cancel()
            self._forget(ref, turn)

    def release(self, ref: ServingRef) -> tuple[int, float | None]:
        """Let every request held for a serving go, in arrival order (each resumes in the order
        it came); how many went, and the seconds since the first of them was held."""
        queue = self._queues.pop(ref, None)
        since = self._since.pop(ref, None)
        if not queue:
            return 0, None
        for turn in queue:
            if not turn.done():
                turn.set_result(None)
        return len(queue), None if since is None else self._clock() - since

    def stop(self) -> int:
        """Refuse every held request (Stopping) and any more; how many were held."""
        self.stopping = True
        count = 0
        for ref in list(self._queues):
            for turn in self._queues.pop(ref):
                if not turn.done():
                    turn.set_exception(Stopping())
                    count += 1
        self._since.clear()
        return count

    def _forget(self, ref: ServingRef, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(ref)
        if queue is None:
            return
        with contextlib.suppress(ValueError):  # released or stopped meanwhile
            queue.remove(turn)
        if not queue:
            del self._queues[ref]
            self._since.pop(ref, None)
