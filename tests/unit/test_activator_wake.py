"""Wakes are rate-limited per serving: at most one per interval, each serving counted on its
own."""

from __future__ import annotations

import pytest

from modelserving_sidecar.activator.hosts import ServingRef
from modelserving_sidecar.activator.wake import WakeLimiter

MNIST = ServingRef("demo", "mnist")
FRAUD = ServingRef("demo", "fraud")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_wake_per_serving_per_interval():
    clock = Clock()
    limiter = WakeLimiter(5.0, clock=clock)
    assert limiter.wait_seconds(MNIST) == 0.0
    assert limiter.take(MNIST)
    assert not limiter.take(MNIST)
    assert limiter.wait_seconds(MNIST) == 5.0
    assert limiter.take(FRAUD)  # another serving's wake is its own
    clock.now += 4.9
    assert not limiter.take(MNIST)
    assert limiter.wait_seconds(MNIST) == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take(MNIST)
    assert not limiter.take(MNIST)
