"""The servings waiting to be reconciled, as in controller-runtime's work queue.

Events come in bursts: a new serving's children are created one after another,
its Deployment's status moves three or four times, its pod's several more. A
serving marked again while it waits is not queued twice, and one marked while
it is being reconciled runs once more afterwards, against the watch caches as
they are then; no serving is reconciled by two workers at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        # Waiting keys, and active ones to run again; the value: a serving's own event among
        # those that marked it (only those take modelIds and check Kafka).
        self._marked: dict[Key, bool] = {}
        self._active: set[Key] = set()
        # When each waiting key was marked (its first mark since a worker last took it), for
        # the metrics of how long servings wait; `on_wait` is told each wait as it ends.
        self._marked_at: dict[Key, float] = {}
        self.on_wait: Callable[[float], None] | None = None

    def add(self, key: Key, *, serving_event: bool) -> None:
        if key not in self._marked and key not in self._active:
            self._ready.put_nowait(key)
        if key not in self._marked:
            self._marked_at[key] = time.monotonic()
        self._marked[key] = self._marked.get(key, False) or serving_event

    async def get(self) -> tuple[Key, bool]:
        """The next key to reconcile; call `done(key)` when finished with it."""
        while True:
            key = await self._ready.get()
            # Skip a key forgotten meanwhile, or queued twice (forgotten, then added again)
            # and already running: done() queues it again.
            if key in self._marked and key not in self._active:
                self._active.add(key)
                marked_at = self._marked_at.pop(key, None)
                if self.on_wait is not None and marked_at is not None:
                    self.on_wait(time.monotonic() - marked_at)
                return key, self._marked.pop(key)

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._marked:
            self._ready.put_nowait(key)

    def forget(self, key: Key) -> None:
        """The serving is gone: drop it if it waits."""
        self._marked.pop(key, None)
        self._marked_at.pop(key, None)

    def idle(self) -> bool:
        return not self._marked and not self._active

    def waiting(self) -> int:
        """Servings marked and not yet taken by a worker (those running count once more)."""
        return len(self._marked)

    def active(self) -> int:
        return len(self._active)

    def oldest_wait(self) -> float:
        """Seconds the longest-waiting serving has waited; 0 when none waits."""
        # Keys enter in the order they are marked and leave when taken: the first is the oldest.
        return time.monotonic() - next(iter(self._marked_at.values())) if self._marked_at else 0.0
