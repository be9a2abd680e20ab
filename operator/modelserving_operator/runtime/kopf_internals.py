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
  as it is indexed, and `all_indexed()` is what waits for the rest. kopf passes it its pause
  toggles too (`operator_paused`, on while peering makes another replica the active one), which
  `cache_current()` waits on.
- `continuous_watch`'s `Bookmark.LISTED`, the marker it yields once a listing is over, and
  kopf's handling of a DELETED event (the object's indexes discarded by its namespace, name and
  uid, its event handlers told): `WatchedObjects` tells kopf DELETED for each object a fresh
  listing no longer returns, which kopf itself never does.
- `kopf._cogs.clients.api.request` counts the tries of an API request only when its delays
  (`settings.networking.error_backoffs`) have a length, and iterates them anew for each
  request: `RetryForever`, an iterable without one, retries for as long as the API server is
  away, each request from its first delay.
- `kopf._core.engines.posting`: `kopf.event()` posts through the queue kopf sets in context
  variables of each object's task (`event_queue_var`, `event_queue_loop_var`), not in the
  startup handler's: `start_in_handler_context` starts the workers from a handler, whose
  context their tasks inherit.
- kopf's indexes, as handed to a handler, are live objects, the same on every call, changed in
  place as kopf indexes: `live_indexes` keeps them for the workers, which read them outside any
  handler.
- `kopf.event()` reads the object it is given only as a mapping (`build_object_reference`):
  `event_target` hands it a plain dict of a cached serving, not a `kopf.Body`.
- `kopf._core.reactor.processing`: the diff base (`NoDiffBase`) is read only for change
  handlers and daemons, which the operator has none of.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Iterator, Mapping
from typing import Any, cast

import kopf

from modelserving_operator.metrics import WatchStreams

log = logging.getLogger(__name__)

_QUIET = "_modelserving_wakes_on_change_only"
_OURS = "_modelserving_no_wait_for_indexes"
# kopf's set of toggles that is on once every object listed at the start is indexed, taken from
# the first event kopf processes; empty before.
_indexing: list[Any] = []

# kopf's set of pause toggles (on while peering makes another replica the active one), taken
# from the first event kopf processes; empty before (kopf processes nothing while paused).
_pausing: list[Any] = []

# Where the wrapped functions count, and whose watched objects they keep: the latest
# operator's (kopf's module is wrapped once per process, and an operator run again in the same
# process counts in its own metrics and keeps its own objects).
_counting_in: list[WatchStreams] = []
_watched: list[WatchedObjects] = []

StreamKey = tuple[str, str, str, str | None]  # a resource's group, version, plural; a namespace
# What a DELETED told for an object gone unseen keeps of its last body: what kopf needs to
# find it (its indexes, its task) and the handlers read (the labels naming its serving).
_IDENTITY = ("name", "namespace", "uid", "resourceVersion", "labels")


class RetryForever:
    """kopf's delays between the tries of an API request: a few quick ones, then one every
    10 s without end (an iterable without a length is endless to kopf, and each request
    iterates it anew)."""

    FIRST = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0)
    THEN = 10.0

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.FIRST, itertools.repeat(self.THEN))


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every object on every event to find what changed since it was last
    handled, for change handlers (on.create, on.update) and daemons. The operator has none,
    only event handlers and indexes: nothing is copied, kept or written for them."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def start_in_handler_context(
    coroutines: Iterable[Coroutine[Any, Any, None]],
) -> list[asyncio.Task[None]]:
    """Start tasks that post Events (kopf.event()): called from a kopf handler, not at startup,
    since kopf sets its event poster in each object's task's context, which a task inherits
    from where it starts."""
    return [asyncio.create_task(coroutine) for coroutine in coroutines]


def live_indexes(kwargs: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """kopf's indexes of `names` as a handler is given them: the same objects on every call,
    which kopf changes in place, so that they can be read later outside any handler."""
    return {name: kwargs.get(name, {}) for name in names}


def event_target(body: Mapping[str, Any]) -> kopf.Body:
    """An object as kopf.event() takes it, from a plain mapping (a cached object, parsed):
    kopf reads only its apiVersion, kind and metadata, as of any mapping."""
    return cast(kopf.Body, body)


class WatchedObjects:
    """What kopf's watch streams of the operator's resources have told it of the objects still
    there, per stream (a resource in a namespace), and whether each stream's latest listing is
    complete.

    kopf restarts a stream from a fresh listing when the API server no longer knows its place
    (410 Gone, as after a restart of the API server or a long outage), when a listing failed,
    and when peering paused the operator, and yields the objects listed; but it tells no
    DELETED for an object deleted meanwhile, and the indexes drop an entry only on DELETED: a
    Service deleted by hand, an evicted pod, a serving deleted while the stream was away would
    stay in the cache for good, and every reconcile would trust them. So once a listing is
    over, each object the stream had told and the listing did not return is told DELETED, as
    client-go's informers do, with the last body seen of it cut to its identity and labels (the
    spec too, for `with_spec`'s resources, whose DELETED handlers read it): kopf discards its
    indexes and runs its event handlers, which mark its serving.

    A stream from its start (or its restart) until its listing is over is unlisted, and the
    reconciles wait (`cache_current`): the indexes may hold what is gone until then. The
    operator's own streams of the children and pods (runtime/watches) report their listings
    here too (`restarting`, `listed`, `stopped`), so that one wait covers every stream.
    """

    def __init__(self, plurals: Collection[str], with_spec: Collection[str] = ()) -> None:
        self.plurals, self.with_spec = frozenset(plurals), frozenset(with_spec)
        self._objects: dict[StreamKey, dict[str, str]] = {}  # uid -> the kept body, as JSON
        self._unlisted: set[StreamKey] = set()
        self._all_listed = asyncio.Event()
        self._all_listed.set()
        self.waiting = False  # the reconciles wait (told in the log once per wait)

    def tracks(self, plural: str) -> bool:
        return plural in self.plurals

    def unlisted(self) -> list[StreamKey]:
        """The streams whose listing is not over, sorted."""
        return sorted(self._unlisted, key=repr)

    async def all_listed(self) -> None:
        await self._all_listed.wait()

    def restarting(self, key: StreamKey) -> None:
        """The stream lists (anew): unlisted until `listed`."""
        self._unlisted.add(key)
        self._all_listed.clear()

    def listed(self, key: StreamKey) -> None:
        self._unlisted.discard(key)
        if not self._unlisted:
            self._all_listed.set()

    def stopped(self, key: StreamKey) -> None:
        """kopf stopped the stream for good (its namespace or resource is gone, or kopf ends):
        nothing waits on it, and what it told is forgotten."""
        self._objects.pop(key, None)
        self.listed(key)

    def _saw(self, known: dict[str, str], event: Mapping[str, Any], with_spec: bool) -> str | None:
        """Keep what the event tells of its object; its uid, if it is an object's event."""
        body = event["object"]
        metadata = body.get("metadata") or {}
        uid: str | None = metadata.get("uid")
        if uid is None or event.get("type") not in (None, "ADDED", "MODIFIED", "DELETED"):
            return None  # a BOOKMARK (a resourceVersion alone)
        if event["type"] == "DELETED":
            known.pop(uid, None)
            return uid
        kept: dict[str, Any] = {k: body[k] for k in ("apiVersion", "kind") if k in body}
        kept["metadata"] = {k: metadata[k] for k in _IDENTITY if k in metadata}
        if with_spec and "spec" in body:
            kept["spec"] = body["spec"]
        known[uid] = json.dumps(kept, separators=(",", ":"))
        return uid

    def stream(
        self, resource: Any, namespace: str | None, events: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """kopf's stream of `resource` in `namespace`, with a DELETED told, once each listing is
        over, for every object it told before that the listing did not return."""
        key: StreamKey = (resource.group, resource.version, resource.plural, namespace)
        self.restarting(key)  # at once: kopf iterates it right away, the workers may not wait
        return self._stream(key, events, resource.plural in self.with_spec)

    async def _stream(
        self, key: StreamKey, events: AsyncIterator[Any], with_spec: bool
    ) -> AsyncIterator[Any]:
        from kopf._cogs.clients.watching import Bookmark

        known = self._objects.setdefault(key, {})
        listing: set[str] | None = set()  # the uids listed so far; None once the listing is over
        restarts = True
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if event is Bookmark.LISTED and listing is not None:
                        gone = [known.pop(uid) for uid in known.keys() - listing]
                        listing = None
                        if gone:
                            log.info(
                                "%s%s: %d gone while the watch was away, told deleted",
                                key[2],
                                f" in {key[3]}" if key[3] else "",
                                len(gone),
                            )
                        for text in gone:
                            yield {"type": "DELETED", "object": json.loads(text)}
                        self.listed(key)
                    elif isinstance(event, dict) and isinstance(event.get("object"), dict):
                        uid = self._saw(known, event, with_spec)
                        if listing is not None and uid is not None and event["type"] is None:
                            listing.add(uid)
                    yield event
        except (GeneratorExit, asyncio.CancelledError):
            restarts = False  # kopf stops the stream for good
            raise
        finally:
            if restarts:  # unlisted until it has listed anew
                self.restarting(key)
            else:
                self.stopped(key)


def wrap_watch_streams(watches: WatchStreams, watched: WatchedObjects | None = None) -> None:
    """Count every listing and watch request of kopf's watch streams in `watches`, by resource
    plural, drop managedFields from what they yield, and have `watched` tell what a listing no
    longer returns (`WatchedObjects`), from now on."""
    from kopf._cogs.clients import watching

    already = bool(_counting_in)
    _counting_in[:] = [watches]
    _watched[:] = [watched] if watched is not None else []
    if already:
        return
    list_and_watch, watch_request = watching.continuous_watch, watching.watch_objs

    def continuous_watch(*, resource: Any, namespace: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].listed(resource.plural)
        events = without_managed_fields(
            list_and_watch(resource=resource, namespace=namespace, **kwargs)
        )
        if _watched and _watched[0].tracks(resource.plural):
            return _watched[0].stream(resource, namespace, events)
        return events

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
        if kwargs.get("operator_paused") is not None:
            _pausing[:] = [kwargs["operator_paused"]]
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


def cache_current_now() -> str | None:
    """None if the watch caches are current; else why not (kopf's pause, a stream listing)."""
    if _pausing and _pausing[0].is_on():
        return "paused (peering: another replica is active)"
    if _watched and (unlisted := _watched[0].unlisted()):
        return "listing " + ", ".join(key[2] for key in unlisted)
    return None


async def cache_current() -> None:
    """Return once the operator may act on its watch caches: kopf's pause is off (peering keeps
    a standby paused, and its caches frozen) and every watch stream of the operator's resources
    has listed since it last restarted. Told in the log once per wait, not once per worker."""
    told = False
    while (why := cache_current_now()) is not None:
        watched = _watched[0] if _watched else None
        if watched is not None and not watched.waiting:
            watched.waiting = told = True
            log.info("reconciles wait: %s", why)
        if _pausing and _pausing[0].is_on():
            await _pausing[0].wait_for(False)
        elif watched is not None:
            await watched.all_listed()
    if told and _watched:
        _watched[0].waiting = False
        log.info("reconciles go on: the watch caches are current")
