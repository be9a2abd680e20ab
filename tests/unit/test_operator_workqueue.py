"""The operator's work queue: a burst of events for one serving is one reconcile, and no
serving is reconciled by two workers at once."""

from __future__ import annotations

import asyncio

from modelserving_operator.runtime.workqueue import WorkQueue
from tests.support.waiting import run_ready_tasks


async def test_a_burst_of_events_for_a_waiting_serving_is_one_reconcile():
    queue = WorkQueue()
    for _ in range(7):  # seven children created one after another
        queue.add(("ns", "a"), serving_event=False)
    queue.add(("ns", "a"), serving_event=True)
    queue.add(("ns", "b"), serving_event=False)

    assert await queue.get() == (("ns", "a"), True)  # a serving's own event among them
    assert await queue.get() == (("ns", "b"), False)
    queue.done(("ns", "a"))
    queue.done(("ns", "b"))
    assert queue.idle()


async def test_a_serving_marked_while_reconciled_runs_again_after_not_beside():
    queue = WorkQueue()
    queue.add(("ns", "a"), serving_event=False)
    key, _ = await queue.get()
    queue.add(key, serving_event=False)  # its Deployment's status moved meanwhile

    second = asyncio.ensure_future(queue.get())
    await run_ready_tasks()
    assert not second.done()  # not handed to a second worker while the first holds it
    queue.done(key)
    assert await asyncio.wait_for(second, 1) == (key, False)
    queue.done(key)
    assert queue.idle()


async def test_a_deleted_serving_is_forgotten():
    queue = WorkQueue()
    queue.add(("ns", "gone"), serving_event=True)
    queue.forget(("ns", "gone"))
    queue.add(("ns", "b"), serving_event=False)
    assert await queue.get() == (("ns", "b"), False)
