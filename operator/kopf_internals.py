"""The private names of kopf the operator relies on, where no public API does the job;
`tests/unit/test_kopf_internals.py` fails loudly when kopf changes them.

- `kopf._cogs.clients.watching`: its `continuous_watch` (one call per listing that starts or
  restarts a resource's watch, yielding every object listed and every event watched after)
  and `watch_objs` (one call per watch request), wrapped to count the watch streams' restarts
  (kopf logs them at debug level only and has no hook for them) and to drop each object's
  `metadata.managedFields` as it arrives. Nothing reads them, they are the largest part of
  most objects, and kopf holds every object listed at its start until all are indexed: a
  thousand servings' objects with them weigh tens of MiB more at that moment.
- `kopf._cogs.aiokits.aiotoggles.ToggleSet`: the set of toggles kopf's start waits on until
  every object listed is indexed. kopf makes a toggle per object listed and drops it once the
  object is indexed, and each make and drop woke every object parked on the set: a start over
  a thousand servings (ten thousand objects with their children and pods) spent minutes of
  CPU waking them, quadratic in the objects, and reconciled nothing meanwhile. A make or drop
  now wakes the waiters only when it changes the set's state, the one thing they wait on.
- `kopf._core.reactor.processing.process_resource_event`: kopf runs every handler of an object
  listed at the start only once all are indexed, so each object's first event waits, with its
  whole body and a task, until the last is: ten thousand at once (about 150 MiB more, kept by
  the process after). The operator's handlers only mark servings in the work queue, and the
  work (the reconciles that read the indexes) waits instead: each object's handlers run as soon
  as it is indexed, and `all_indexed()` is what waits for the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from modelserving.operator.metrics import WatchStreams

_QUIET = "_modelserving_wakes_on_change_only"
_OURS = "_modelserving_no_wait_for_indexes"
# kopf's set of toggles that is on once every object listed at the start is indexed, taken from
# the first event kopf processes; empty before.
_indexing: list[Any] = []

# Where the wrapped functions count: the latest operator's (kopf's module is wrapped once per
# process, and an operator run again in the same process counts in its own metrics).
_counting_in: list[WatchStreams] = []


def wrap_watch_streams(watches: WatchStreams) -> None:
    """Count every listing and watch request of kopf's watch streams in `watches`, by resource
    plural, and drop managedFields from what they yield, from now on."""
    from kopf._cogs.clients import watching

    already = bool(_counting_in)
    _counting_in[:] = [watches]
    if already:
        return
    list_and_watch, watch_request = watching.continuous_watch, watching.watch_objs

    def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].listed(resource.plural)
        return without_managed_fields(list_and_watch(resource=resource, **kwargs))

    def watch_objs(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].watched(resource.plural)
        return watch_request(resource=resource, **kwargs)

    # kopf's own functions look these up in their module at each call.
    watching.continuous_watch = continuous_watch
    watching.watch_objs = watch_objs


async def without_managed_fields(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The raw events (and listed objects, and kopf's bookmarks) of a watch stream, each object
    without its managedFields."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, dict) and isinstance(event.get("object"), dict):
                metadata = event["object"].get("metadata")
                if isinstance(metadata, dict):
                    metadata.pop("managedFields", None)
            yield event


def wake_toggle_waiters_on_change_only() -> None:
    """Make kopf's toggle sets wake their waiters only when a toggle made or dropped changes
    the set's state (once per process)."""
    from kopf._cogs.aiokits import aiotoggles

    toggle_set = aiotoggles.ToggleSet
    if getattr(toggle_set, _QUIET, False):
        return

    async def make_toggle(
        self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            was = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != was:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
        await drop_toggles(self, [toggle])

    async def drop_toggles(
        self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]
    ) -> None:
        async with self._condition:
            was = self.is_on()
            self._toggles.difference_update(toggles)
            if self.is_on() != was:
                self._condition.notify_all()

    toggle_set.make_toggle = make_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggle = drop_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggles = drop_toggles  # type: ignore[method-assign]
    setattr(toggle_set, _QUIET, True)


def handle_events_while_indexing() -> None:
    """Have kopf run each object's handlers as soon as the object is indexed, not once every
    object is (before kopf.run; once per process). What needs all the indexes filled awaits
    `all_indexed()`."""
    from kopf._core.reactor import processing

    original = processing.process_resource_event
    if getattr(original, _OURS, False):
        return

    async def process_resource_event(
        *, operator_indexed: Any = None, resource_indexed: Any = None, **kwargs: Any
    ) -> Any:
        if operator_indexed is None:
            return await original(**kwargs)
        _indexing[:] = [operator_indexed]
        try:
            return await original(**kwargs)  # indexes, then handlers, without waiting
        finally:
            if resource_indexed is not None:  # this object's indexing is done
                await operator_indexed.drop_toggle(resource_indexed)

    setattr(process_resource_event, _OURS, True)
    # kopf.run binds the function when it starts: patched before, it binds this one.
    processing.process_resource_event = process_resource_event  # type: ignore[assignment]


async def all_indexed() -> None:
    """Return once every object kopf listed at the start is indexed (at once after that)."""
    if _indexing:
        await _indexing[0].wait_for(True)
