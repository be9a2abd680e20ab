"""The hold queue: requests for a serving wait in arrival order, at most its size, and go when a
pod is usable, in that order; one past its deadline, or held when the activator stops, is let
go with the reason; each serving's queue is its own."""

from __future__ import annotations

import asyncio

import pytest

from modelserving_sidecar.activator.hold import HeldTooLong, HoldQueues, QueueFull, Stopping
from modelserving_sidecar.activator.hosts import ServingRef
from tests.support.waiting import run_ready_tasks

MNIST = ServingRef("demo", "mnist")
FRAUD = ServingRef("demo", "fraud")
LONG = 60.0  # a deadline no test reaches


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def queues(size: int = 10, clock: Clock | None = None) -> tuple[HoldQueues, list[ServingRef]]:
    asked: list[ServingRef] = []
    return HoldQueues(size, asked.append, clock=clock or Clock()), asked


async def test_held_requests_go_in_arrival_order_when_a_pod_is_usable():
    holds, asked = queues()
    went: list[int] = []

    async def request(number: int) -> None:
        await holds.hold(MNIST, LONG)
        went.append(number)

    tasks = []
    for number in range(5):
        tasks.append(asyncio.create_task(request(number)))
        await run_ready_tasks()  # each is held before the next comes
    assert holds.held(MNIST) == 5 and went == []
    assert asked == [MNIST] * 5  # the wake is told of each

    count, _ = holds.release(MNIST)
    await asyncio.gather(*tasks)
    assert count == 5
    assert went == [0, 1, 2, 3, 4]
    assert holds.held(MNIST) == 0 and holds.counts() == {}


async def test_a_full_queue_refuses_at_once_and_takes_again_once_there_is_room():
    holds, _ = queues(size=2)
    first = asyncio.create_task(holds.hold(MNIST, LONG))
    second = asyncio.create_task(holds.hold(MNIST, LONG))
    await run_ready_tasks()
    with pytest.raises(QueueFull):
        await holds.hold(MNIST, LONG)
    # Another serving's queue is its own.
    other = asyncio.create_task(holds.hold(FRAUD, LONG))
    await run_ready_tasks()
    assert holds.counts() == {MNIST: 2, FRAUD: 1}

    first.cancel()  # a caller that went away leaves room
    await run_ready_tasks()
    assert holds.held(MNIST) == 1
    third = asyncio.create_task(holds.hold(MNIST, LONG))
    await run_ready_tasks()
    assert holds.held(MNIST) == 2
    holds.release(MNIST)
    holds.release(FRAUD)
    await asyncio.gather(second, third, other)


async def test_a_request_held_past_its_deadline_is_let_go_and_leaves_the_queue():
    holds, _ = queues()
    waiting = asyncio.create_task(holds.hold(MNIST, LONG))
    with pytest.raises(HeldTooLong):
        await holds.hold(MNIST, 0.01)
    assert holds.held(MNIST) == 1  # the other one still waits
    holds.release(MNIST)
    await waiting


async def test_stopping_lets_every_held_request_go_and_refuses_new_ones():
    holds, _ = queues()
    held = [asyncio.create_task(holds.hold(ref, LONG)) for ref in (MNIST, MNIST, FRAUD)]
    await run_ready_tasks()
    assert holds.stop() == 3
    for task in held:
        with pytest.raises(Stopping):
            await task
    with pytest.raises(Stopping):
        await holds.hold(MNIST, LONG)
    assert holds.counts() == {}


async def test_release_says_how_long_since_the_first_request_was_held():
    clock = Clock()
    holds, _ = queues(clock=clock)
    first = asyncio.create_task(holds.hold(MNIST, LONG))
    await run_ready_tasks()
    clock.now += 2.5
    second = asyncio.create_task(holds.hold(MNIST, LONG))
    await run_ready_tasks()
    clock.now += 1.0
    assert holds.release(MNIST) == (2, 3.5)
    await asyncio.gather(first, second)
    assert holds.release(MNIST) == (0, None)  # nothing held: no wake to time


def test_a_queue_holds_at_least_one():
    with pytest.raises(ValueError):
        HoldQueues(0, lambda ref: None)
