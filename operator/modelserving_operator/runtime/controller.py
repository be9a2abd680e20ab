"""The operator's controller loop: a fixed number of workers reconcile the servings the work
queue hands out, one serving at a time each; timers mark a serving again (a retry, a status
write that waits); the first catch-up after a start is told in the log and gives back the
memory the start's listing left free.

kopf's handlers only mark servings here (handlers.py); what a reconcile does is reconcile.py's.
A worker waits until kopf has indexed every object listed at the start and while the watch
caches are not current (a paused standby, a stream listing anew: see kopf_internals).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from modelserving_operator.metrics import OperatorMetrics
from modelserving_operator.runtime.kopf_internals import (
    all_indexed,
    cache_current,
    start_in_handler_context,
)
from modelserving_operator.runtime.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Again:
    """When to reconcile a serving again: after a step that failed (an API error, Kafka not
    reached), or to write a status that waited (PROGRESS_WRITE_SECONDS), which is no failure."""

    seconds: float
    failed: bool


# What reconciling one serving tells the controller: when to run it again (None: not unless
# an event marks it), or that it is gone or going (nothing was done).
Outcome = Again | Literal["gone"] | None
# Reconcile the serving of `key`; `serving_event`: a serving's own event was among those that
# marked it.
ReconcileOne = Callable[[Key, bool], Awaitable[Outcome]]


@dataclass
class Controller:
    """The work queue, the workers that drain it, and the timers that mark servings again."""

    reconcile: ReconcileOne
    workers: int
    retry_seconds: float  # after a reconcile that raised
    metrics: OperatorMetrics
    writes: Callable[[], int]  # the writes reconciles made since the start, for the catch-up
    queue: WorkQueue = field(default_factory=WorkQueue)
    retries: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    # Servings whose status write waits (reconcile.PROGRESS_WRITE_SECONDS): when each is
    # marked again.
    waits: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reconciled: set[Key] = field(default_factory=set)  # since the start
    caught_up: bool = False  # the queue has been empty once since the start

    def mark(self, key: Key, *, serving_event: bool) -> None:
        self.queue.add(key, serving_event=serving_event)

    def start(self, *loops: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start the workers, and `loops` beside them (the periodic checks), unless started.
        Called from a kopf handler: see `start_in_handler_context`."""
        if not self.tasks:
            workers = [self._work() for _ in range(self.workers)]
            self.tasks = start_in_handler_context([*workers, *(loop() for loop in loops)])

    def forget(self, key: Key) -> None:
        """The serving is gone: no timer marks it again, and it does not wait."""
        for timers in (self.retries, self.waits):
            if handle := timers.pop(key, None):
                handle.cancel()
        self.queue.forget(key)
        self.reconciled.discard(key)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for handle in [*self.retries.values(), *self.waits.values()]:
            handle.cancel()

    async def _work(self) -> None:
        """One worker: reconcile the servings the queue hands out, one at a time, once the
        indexes hold every object listed at the start; none while kopf pauses the operator (a
        standby of peering) or a watch stream lists anew (see cache_current)."""
        await all_indexed()
        while True:
            key, serving_event = await self.queue.get()
            await cache_current()  # the serving taken waits too, then reads the caches as they are
            started, outcome = time.monotonic(), "error"
            try:
                outcome = await self._reconcile(key, serving_event)
            except Exception:  # a bug must not take the worker with it
                log.exception("reconciling %s/%s failed", *key)
                self.reconciled.add(key)
                self._mark_later(self.retries, key, self.retry_seconds)
            finally:
                self.queue.done(key)
                self.metrics.reconciled(outcome, time.monotonic() - started)
            if self.queue.idle() and self.reconciled:
                self._caught_up()

    async def _reconcile(self, key: Key, serving_event: bool) -> str:
        """Reconcile one serving and set its timers; returns the outcome the metrics count
        (metrics.OUTCOMES)."""
        again = await self.reconcile(key, serving_event)
        if again == "gone":
            return "gone"  # the garbage collector removes the children
        self.reconciled.add(key)
        if again is None:
            return "done"
        if again.failed:
            self._mark_later(self.retries, key, again.seconds)
            return "retry"
        self._mark_later(self.waits, key, again.seconds)
        return "done"

    def _mark_later(self, timers: dict[Key, asyncio.TimerHandle], key: Key, delay: float) -> None:
        """Mark the serving again in `delay` seconds, unless `timers` holds a sooner mark of it."""
        loop = asyncio.get_running_loop()
        if (pending := timers.get(key)) is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()

        def again() -> None:
            timers.pop(key, None)
            self.queue.add(key, serving_event=True)

        timers[key] = loop.call_later(delay, again)

    def _caught_up(self) -> None:
        log.info(
            "caught up: %d servings reconciled, %d writes since the start",
            len(self.reconciled),
            self.writes(),
        )
        if not self.caught_up:
            self.caught_up = True
            release_startup_memory()


def release_startup_memory() -> None:
    """Give back what the first listing of every object left free. A start over a thousand
    servings handles thousands of objects at once, and the freed heap stays resident unless
    returned (glibc's malloc_trim; a no-op elsewhere). Once, after the first catch-up."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
