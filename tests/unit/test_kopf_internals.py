"""The private names of kopf the operator relies on
(operator/modelserving_operator/runtime/kopf_internals.py): each test fails first when kopf
changes what the operator counts on, and shows what the change does."""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import inspect
import itertools
import logging

import aiohttp
import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api, watching
from kopf._cogs.structs import bodies, ephemera, references
from kopf._core.engines import indexing, posting
from kopf._core.reactor import processing, running

from modelserving_operator.metrics import WatchStreams
from modelserving_operator.runtime import kopf_internals
from modelserving_operator.runtime.kopf_internals import (
    NoDiffBase,
    RetryForever,
    WatchedObjects,
    all_indexed,
    cache_current,
    cache_current_now,
    event_target,
    handle_events_while_indexing,
    live_indexes,
    start_in_handler_context,
    wake_toggle_waiters_on_change_only,
    without_managed_fields,
    wrap_watch_streams,
)
from tests.support.waiting import run_ready_tasks

SERVINGS = references.Resource("modelserving.io", "v1", "modelservings", namespaced=True)
SERVICES = references.Resource("", "v1", "services", namespaced=True)


def test_kopf_still_calls_the_watch_functions_the_operator_counts_by_their_module_names():
    # If kopf renames these or stops looking them up in its module at each call, the operator's
    # watch metrics go silent: this fails first.
    assert "continuous_watch(" in inspect.getsource(watching.infinite_watch)
    assert "watch_objs(" in inspect.getsource(watching.continuous_watch)
    assert "resource" in inspect.signature(watching.continuous_watch).parameters
    assert "resource" in inspect.signature(watching.watch_objs).parameters

    watches = WatchStreams()
    wrap_watch_streams(watches)
    resource = SERVINGS
    listing = watching.continuous_watch(
        resource=resource, settings=None, namespace=None, operator_pause_waiter=None
    )
    request = watching.watch_objs(
        resource=resource, settings=None, namespace=None, operator_pause_waiter=None
    )
    assert inspect.isasyncgen(listing) and inspect.isasyncgen(request)
    assert watches.listings == {"modelservings": 1} and watches.requests == {"modelservings": 1}

    again = WatchStreams()  # an operator run again in the same process counts in its own
    wrap_watch_streams(again)
    watching.watch_objs(
        resource=resource, settings=None, namespace=None, operator_pause_waiter=None
    )
    assert again.requests == {"modelservings": 1} and watches.requests == {"modelservings": 1}


async def test_watched_objects_reach_kopf_without_their_managed_fields():
    closed = []

    async def stream():
        try:
            yield {"type": None, "object": {"metadata": {"name": "a", "managedFields": [{}]}}}
            yield "bookmark"  # kopf's own markers pass as they are
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
            yield {"type": "ADDED", "object": {"metadata": {"name": "b"}}}
        finally:
            closed.append(True)

    events = without_managed_fields(stream())
    assert await anext(events) == {"type": None, "object": {"metadata": {"name": "a"}}}
    assert await anext(events) == "bookmark"
    assert (await anext(events))["type"] == "ERROR"
    await events.aclose()  # kopf stops reading (a pause, a shutdown): the stream is closed too
    assert closed == [True]


async def test_toggles_made_and_dropped_wake_the_waiters_only_when_the_set_changes_state():
    # kopf's start: a toggle per object listed, dropped once it is indexed, with objects waiting
    # on the set for all of them. Each waiter re-checks the set each time it is woken.
    wake_toggle_waiters_on_change_only()
    checks = 0

    def counting_all(states):
        nonlocal checks
        checks += 1
        return all(states)

    toggles = aiotoggles.ToggleSet(counting_all)
    objects = [await toggles.make_toggle(name=f"object {i}") for i in range(200)]
    waiters = [asyncio.create_task(toggles.wait_for(True)) for _ in range(100)]
    await asyncio.sleep(0)
    checks = 0

    for toggle in objects[:-1]:
        await toggles.drop_toggle(toggle)
        await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)  # still one object not indexed
    await toggles.drop_toggles(objects[-1:])
    await asyncio.wait_for(asyncio.gather(*waiters), 5)

    # Each drop checks the set before and after; the waiters are woken once, by the last one
    # (a wake on every drop is 200 x 100 checks, and quadratic in the objects)
    assert checks <= 2 * len(objects) + 2 * len(waiters)
    # A toggle made "off" turns an "on" set off: waiters for off are woken
    off = asyncio.create_task(toggles.wait_for(False))
    await asyncio.sleep(0)
    await toggles.make_toggle(False, name="a late object")
    await asyncio.wait_for(off, 5)


def test_kopf_still_binds_and_waits_where_the_operator_handles_events_while_indexing():
    # kopf.run binds the processing function when it starts (so it is patched before), and the
    # function waits on the toggle set for all objects' indexes after each object's indexing.
    assert "functools.partial(processing.process_resource_event" in inspect.getsource(
        running.spawn_tasks
    )
    params = inspect.signature(processing.process_resource_event).parameters
    assert "operator_indexed" in params and "resource_indexed" in params
    source = inspect.getsource(processing.process_resource_event)
    assert source.index("index_resource(") < source.index("operator_indexed.wait_for(True)")


async def test_each_objects_handlers_run_once_it_is_indexed_and_the_work_waits_for_all(
    monkeypatch,
):
    wake_toggle_waiters_on_change_only()
    handled = []

    async def kopf_processing(**kwargs):  # stands for kopf's: index, wait if told, handlers
        if kwargs.get("operator_indexed") is not None:
            await kwargs["operator_indexed"].wait_for(True)
        handled.append(kwargs["raw_event"]["object"]["metadata"]["name"])

    monkeypatch.setattr(processing, "process_resource_event", kopf_processing)
    monkeypatch.setattr(kopf_internals, "_indexing", [])
    handle_events_while_indexing()
    patched = processing.process_resource_event
    assert patched is not kopf_processing
    handle_events_while_indexing()  # once per process
    assert processing.process_resource_event is patched

    toggles = aiotoggles.ToggleSet(all)
    listing = await toggles.make_toggle(name="the listing")
    first, second = [await toggles.make_toggle(name=n) for n in ("a", "b")]

    def event(name):
        return {"type": None, "object": {"metadata": {"name": name}}}

    def handle(name, toggle):  # kopf's first event of an object listed at the start
        return asyncio.wait_for(
            patched(raw_event=event(name), operator_indexed=toggles, resource_indexed=toggle), 5
        )

    await handle("a", first)
    assert handled == ["a"] and first not in toggles  # handled at once, its indexing done
    work = asyncio.create_task(all_indexed())  # the workers start with the first event
    await handle("b", second)
    assert handled == ["a", "b"]
    await run_ready_tasks()
    assert not work.done()  # the listing is not over: the work waits
    await toggles.drop_toggle(listing)
    await asyncio.wait_for(work, 5)
    # Once all are indexed, kopf passes no toggles: handled as they come
    await patched(raw_event=event("c"))
    assert handled == ["a", "b", "c"]
    await asyncio.wait_for(all_indexed(), 5)


async def test_all_indexed_does_not_wait_before_kopf_has_processed_anything(monkeypatch):
    monkeypatch.setattr(kopf_internals, "_indexing", [])
    await asyncio.wait_for(all_indexed(), 1)


def _object(name, uid, **extra):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": "1",
            "labels": {"app.kubernetes.io/instance": "s"},
            "annotations": {"a": "b"},
        },
        **extra,
    }


def _listing_then(objects, *watched):
    """kopf's continuous_watch as it yields: the listing, its marker, then watch events; then it
    returns (410 Gone, a pause)."""

    async def stream():
        for obj in objects:
            yield {"type": None, "object": obj}
        yield watching.Bookmark.LISTED
        for event in watched:
            yield event

    return stream()


async def _drain(events):
    return [event async for event in events]


def test_kopf_still_lists_then_marks_the_listing_over_and_tells_deleted_by_namespace_name_uid():
    # WatchedObjects counts on these: the marker after a listing, the listed objects' type
    # None, and a DELETED that discards the object's index entries by its identity alone.
    source = inspect.getsource(watching)  # the module's: its continuous_watch may be wrapped
    assert "yield {'type': None, 'object': obj}" in source
    assert source.index("fetch_objs(") < source.index("yield Bookmark.LISTED")
    assert "raw_type == 'DELETED'" in inspect.getsource(processing.process_resource_event)
    assert "indexers.discard(body=body)" in inspect.getsource(indexing.index_resource)
    body = bodies.Body({"metadata": {"name": "a", "namespace": "ns", "uid": "u1"}})
    assert indexing.OperatorIndexers().make_key(body) == ("ns", "a", "u1")


async def test_an_object_a_fresh_listing_no_longer_returns_is_told_deleted_after_it():
    watched = WatchedObjects(["services"])
    a, b = _object("a", "u-a", spec={"big": 1}), _object("b", "u-b", status={"s": 1})
    first = await _drain(
        watched.stream(
            SERVICES,
            "ns",
            _listing_then(
                [a, b],
                {
                    "type": "MODIFIED",
                    "object": {**b, "metadata": {**b["metadata"], "resourceVersion": "2"}},
                },
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}},
            ),
        )
    )
    assert [e if e is watching.Bookmark.LISTED else e["type"] for e in first] == [
        None,
        None,
        watching.Bookmark.LISTED,
        "MODIFIED",
        "BOOKMARK",
    ]  # nothing was told before: nothing added

    # The stream restarts (410 Gone): b was deleted meanwhile, and c made
    c = _object("c", "u-c")
    again = await _drain(watched.stream(SERVICES, "ns", _listing_then([a, c])))
    assert [e if e is watching.Bookmark.LISTED else e["type"] for e in again] == [
        None,
        None,
        "DELETED",
        watching.Bookmark.LISTED,
    ]
    told = again[2]["object"]
    assert told == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "b",
            "namespace": "ns",
            "uid": "u-b",
            "resourceVersion": "2",
            "labels": {"app.kubernetes.io/instance": "s"},
        },
    }  # its identity and labels as last seen: no status, annotations, spec

    # Once told, or deleted while watched, an object is not told again
    c_gone = {"type": "DELETED", "object": c}
    await _drain(watched.stream(SERVICES, "ns", _listing_then([a, c], c_gone)))
    third = await _drain(watched.stream(SERVICES, "ns", _listing_then([a])))
    assert [e["type"] for e in third if isinstance(e, dict)] == [None]
    # ... and another namespace's stream is its own
    other = await _drain(watched.stream(SERVICES, "other", _listing_then([])))
    assert other == [watching.Bookmark.LISTED]


async def test_the_spec_is_kept_for_the_resources_whose_deleted_handlers_read_it():
    watched = WatchedObjects(["modelservings"], with_spec=["modelservings"])
    serving = {**_object("s", "u-s", spec={"auth": {"mode": "kubernetes"}}), "status": {"x": 1}}
    await _drain(watched.stream(SERVINGS, "ns", _listing_then([serving])))
    again = await _drain(watched.stream(SERVINGS, "ns", _listing_then([])))
    assert again[0]["type"] == "DELETED"
    assert again[0]["object"]["spec"] == {"auth": {"mode": "kubernetes"}}
    assert "status" not in again[0]["object"]


async def test_a_told_deleted_object_leaves_kopfs_real_index():
    # kopf's own indexing, fed what the stream yields: the entry of the object gone is dropped.
    registry = kopf.OperatorRegistry()

    @kopf.index("", "v1", "services", registry=registry, id="by_serving")
    async def by_serving(body, **_):
        return {body["metadata"]["labels"]["app.kubernetes.io/instance"]: body["metadata"]["name"]}

    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())

    async def index(event):
        await indexing.index_resource(
            indexers=indexers,
            registry=registry,
            settings=kopf.OperatorSettings(),
            resource=SERVICES,
            raw_event=event,
            memory=indexing.IndexingMemory(),
            logger=logging.getLogger("test"),
            memo=ephemera.Memo(),
            body=bodies.Body(event["object"]),
        )

    watched = WatchedObjects(["services"])
    a, b = _object("a", "u-a"), _object("b", "u-b")
    for stream in ([a, b], [a]):
        for event in await _drain(watched.stream(SERVICES, "ns", _listing_then(stream))):
            if isinstance(event, dict):
                await index(event)
        if stream == [a, b]:
            assert sorted(indexers.indices["by_serving"]["s"]) == ["a", "b"]
    assert list(indexers.indices["by_serving"]["s"]) == ["a"]


async def test_the_work_waits_while_a_stream_lists_anew_and_while_kopf_pauses(monkeypatch):
    watched = WatchedObjects(["services"])
    paused = aiotoggles.ToggleSet(any)
    peering = await paused.make_toggle(False, name="peering")
    monkeypatch.setattr(kopf_internals, "_watched", [watched])
    monkeypatch.setattr(kopf_internals, "_pausing", [paused])
    await asyncio.wait_for(cache_current(), 1)  # nothing watched yet: current

    gate = asyncio.Event()

    async def listing_held():
        yield {"type": None, "object": _object("a", "u-a")}
        await gate.wait()
        yield watching.Bookmark.LISTED

    stream = watched.stream(SERVICES, "ns", listing_held())
    assert cache_current_now() == "listing services"  # from the call on, before it is read
    work = asyncio.create_task(cache_current())
    await anext(stream)
    await run_ready_tasks()
    assert not work.done()
    gate.set()
    assert await anext(stream) is watching.Bookmark.LISTED
    await asyncio.wait_for(work, 1)

    # Peering pauses the operator: kopf's stream ends (unlisted until it lists again) and the
    # work waits for both the pause to end and the listing
    await peering.turn_to(True)
    await _drain(stream)
    assert cache_current_now() == "paused (peering: another replica is active)"
    work = asyncio.create_task(cache_current())
    await run_ready_tasks()
    await peering.turn_to(False)
    await run_ready_tasks()
    assert not work.done() and cache_current_now() == "listing services"
    relisted = watched.stream(SERVICES, "ns", _listing_then([], {"type": "ADDED", "object": {}}))
    assert (await anext(relisted))["type"] == "DELETED"  # a, gone meanwhile
    assert not work.done()
    assert await anext(relisted) is watching.Bookmark.LISTED  # and watching on
    await asyncio.wait_for(work, 1)


async def test_a_stream_kopf_stops_for_good_holds_no_work(monkeypatch):
    watched = WatchedObjects(["services"])
    monkeypatch.setattr(kopf_internals, "_watched", [watched])
    monkeypatch.setattr(kopf_internals, "_pausing", [])

    async def hangs():
        yield {"type": None, "object": _object("a", "u-a")}
        await asyncio.Event().wait()

    stream = watched.stream(SERVICES, "gone-namespace", hangs())
    await anext(stream)
    await stream.aclose()  # its namespace deleted: kopf stops the watcher mid-listing
    await asyncio.wait_for(cache_current(), 1)


def test_kopf_still_passes_its_pause_toggles_to_the_event_processing():
    params = inspect.signature(processing.process_resource_event).parameters
    assert "operator_paused" in params
    assert "operator_paused=operator_paused" in inspect.getsource(running.spawn_tasks)


def test_the_delays_never_end_and_each_request_starts_from_the_first():
    delays = RetryForever()
    # kopf counts the tries of a Sized iterable and gives up after them; this one is not.
    assert not isinstance(delays, collections.abc.Sized)
    first = list(itertools.islice(delays, 1000))
    again = list(itertools.islice(delays, 10))
    assert len(first) == 1000 and again == first[:10]
    assert first[:6] == [1, 1, 2, 3, 5, 8] and set(first[6:]) == {10}


class _FailingSession:
    """An API server away for `failures` tries of each request, then back."""

    def __init__(self, failures: int) -> None:
        self.failures, self.tries, self.closed = failures, 0, False

    async def request(self, **_: object) -> object:
        self.tries += 1
        if self.tries <= self.failures:
            raise aiohttp.ClientConnectionError("connection refused")
        return type("Response", (), {"status": 200})()


class _Context:
    server = "https://kube.invalid"

    def __init__(self, session: _FailingSession) -> None:
        self.session = session


async def test_kopf_retries_a_request_for_as_long_as_delays_without_a_length_go_on():
    # kopf's own request function: with delays that have a length (its default is eight) it
    # gives up after them (a watch given up on is never renewed); with RetryForever it goes on
    # until the API server is back, and each request starts from the first delay again.
    log = logging.getLogger("test")
    settings = kopf.OperatorSettings()
    settings.networking.error_backoffs = (0.0,) * 8
    session = _FailingSession(failures=9)
    try:
        await api.request(
            "GET", "/version", settings=settings, context=_Context(session), logger=log
        )
    except aiohttp.ClientConnectionError:
        assert session.tries == 9
    else:
        raise AssertionError("kopf no longer gives up after delays that have a length")

    delays = RetryForever()
    delays.FIRST, delays.THEN = (0.0,), 0.0  # the same shape, without the waits
    settings.networking.error_backoffs = delays
    for _ in range(2):
        session = _FailingSession(failures=50)
        response = await asyncio.wait_for(
            api.request(
                "GET", "/version", settings=settings, context=_Context(session), logger=log
            ),
            5,
        )
        assert response.status == 200 and session.tries == 51


async def test_tasks_started_from_a_handler_post_events_through_kopfs_poster():
    # kopf sets its event poster in context variables of each object's task, where its handlers
    # run, and kopf.event() reads them there; a task inherits the context it starts in.
    assert "posting.event_queue_var.set(" in inspect.getsource(processing.process_resource_event)
    assert "event_queue_var.get()" in inspect.getsource(posting.enqueue)
    serving = event_target({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "a"}})

    async def posts() -> None:
        kopf.event(serving, type="Normal", reason="Test", message="from a worker")

    settings = kopf.OperatorSettings()
    events: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()

    async def a_handler() -> list[asyncio.Task[None]]:  # as kopf runs one
        posting.settings_var.set(settings)
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        posting.event_queue_var.set(events)
        return start_in_handler_context([posts()])

    tasks = await asyncio.create_task(a_handler(), context=contextvars.Context())
    await asyncio.gather(*tasks)
    event = events.get_nowait()
    # kopf read the plain mapping it was given as an object's reference (event_target)
    assert (event.reason, event.ref["name"], event.ref["kind"]) == ("Test", "a", "Thing")

    # Started elsewhere (the startup handler's context holds no poster), it fails
    outside = asyncio.create_task(posts(), context=contextvars.Context())
    try:
        await outside
    except LookupError:
        pass
    else:
        raise AssertionError("kopf.event() posted with no poster in the context")


async def test_the_indexes_a_handler_is_given_are_live_for_the_workers():
    # kopf's own indexing: the index the handler saw changes in place as objects are indexed.
    registry = kopf.OperatorRegistry()

    @kopf.index("", "v1", "services", registry=registry, id="names")
    async def names(name, **_):
        return {name: True}

    indexers = indexing.OperatorIndexers()
    indexers.ensure(registry._indexing.get_all_handlers())
    seen = live_indexes(indexers.indices, ["names"])  # as a handler's kwargs hold them

    async def index(name):
        body = {"metadata": {"name": name, "namespace": "ns", "uid": name}}
        await indexing.index_resource(
            indexers=indexers,
            registry=registry,
            settings=kopf.OperatorSettings(),
            resource=SERVICES,
            raw_event={"type": None, "object": body},
            memory=indexing.IndexingMemory(),
            logger=logging.getLogger("test"),
            memo=ephemera.Memo(),
            body=bodies.Body(body),
        )

    await index("a")
    await index("b")
    assert sorted(seen["names"]) == ["a", "b"] and seen["names"] is indexers.indices["names"]


def test_kopf_reads_the_diff_base_only_for_change_handlers_and_daemons():
    # NoDiffBase keeps nothing: the diff it makes is always empty. kopf uses the diff for
    # change handlers and (to reset idle timers) daemons, which the operator registers none of.
    source = inspect.getsource(processing._detect_causes)
    assert source.count("diff=diff") == 1 and "reset=bool(diff)" in source
    assert "if registry._changing.has_handlers(resource=resource)" in source
    assert "if registry._spawning.has_handlers(resource=resource)" in source
    body = bodies.Body({"metadata": {"name": "a"}, "spec": {"x": 1}})
    assert NoDiffBase().build(body=body) == {} and NoDiffBase().fetch(body=body) is None

    from modelserving_operator import handlers  # noqa: F401 (registers the handlers)

    registry = kopf.get_default_registry()
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert registry._watching.get_all_handlers()  # the handlers are there: the check holds
