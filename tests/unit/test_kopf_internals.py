"""The private names of kopf the operator relies on (operator/kopf_internals.py): each test fails
first when kopf changes what the operator counts on, and shows what the change does."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import watching
from kopf._core.reactor import processing, running

from modelserving.operator import kopf_internals
from modelserving.operator.kopf_internals import (
    all_indexed,
    handle_events_while_indexing,
    wake_toggle_waiters_on_change_only,
    without_managed_fields,
    wrap_watch_streams,
)
from modelserving.operator.metrics import WatchStreams


def test_kopf_still_calls_the_watch_functions_the_operator_counts_by_their_module_names():
    # If kopf renames these or stops looking them up in its module at each call, the operator's
    # watch metrics go silent: this fails first.
    assert "continuous_watch(" in inspect.getsource(watching.infinite_watch)
    assert "watch_objs(" in inspect.getsource(watching.continuous_watch)
    assert "resource" in inspect.signature(watching.continuous_watch).parameters
    assert "resource" in inspect.signature(watching.watch_objs).parameters

    watches = WatchStreams()
    wrap_watch_streams(watches)
    resource = SimpleNamespace(plural="modelservings")
    listing = watching.continuous_watch(resource=resource, settings=None, namespace=None,
                                        operator_pause_waiter=None)  # fmt: skip
    request = watching.watch_objs(resource=resource, settings=None, namespace=None,
                                  operator_pause_waiter=None)  # fmt: skip
    assert inspect.isasyncgen(listing) and inspect.isasyncgen(request)
    assert watches.listings == {"modelservings": 1} and watches.requests == {"modelservings": 1}

    again = WatchStreams()  # an operator run again in the same process counts in its own
    wrap_watch_streams(again)
    watching.watch_objs(resource=resource, settings=None, namespace=None,
                        operator_pause_waiter=None)  # fmt: skip
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
    await asyncio.sleep(0.01)
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
