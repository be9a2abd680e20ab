"""Polling with a deadline, never fixed sleeps: what tests use to wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll predicate until it returns a truthy value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.1
) -> T:
    """The same for coroutines: await predicate() until truthy, failing at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        await asyncio.sleep(interval)


# Loop turns `run_ready_tasks` gives: more than any chain of awaits in the code under test
# takes from a wake-up to its next wait (a get handed its item, a task its event).
READY_TURNS = 20


async def run_ready_tasks() -> None:
    """Let every task that can run, run until it waits again: a fixed number of turns of the
    event loop, no wall-clock time. A task not done after it is waiting for something, which is
    how a test sees that it waits (never by sleeping and hoping it had the time)."""
    for _ in range(READY_TURNS):
        await asyncio.sleep(0)
