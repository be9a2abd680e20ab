"""The concurrency autoscaler's arithmetic (autoscaler/decide.py), as Knative's KPA does it:
scale-ups that follow the load, a burst followed at once and held, scale-downs by at most half,
and zero only after the idle time with minReplicas 0."""

from __future__ import annotations

import pytest

from modelserving_operator.autoscaler.decide import Decision, Memory, Policy, Reading, decide
from modelserving_operator.spec import AutoscalingSpec

POLICY = Policy.of(
    AutoscalingSpec(
        enabled=True,
        metric="concurrency",
        min_replicas=0,
        max_replicas=10,
        target_concurrency=10,
        stable_window_seconds=60,
        panic_window_percent=10,
        panic_threshold_percent=200,
        scale_to_zero_after_seconds=120,
    )
)
NOW = 1000.0


def steady(concurrency: float, seconds: float = 60, now: float = NOW) -> list[Reading]:
    """A reading every 2 s for `seconds` up to `now`."""
    return [Reading(now - t, concurrency) for t in range(int(seconds) - 2, -1, -2)]


def read_long_ago(**fields: object) -> Memory:
    """A serving read for longer than a stable window."""
    return Memory(**{"since": 0.0, "busy_at": NOW, "replicas": 1, **fields})  # type: ignore[arg-type]


def run(
    readings: list[Reading], ready: int, current: int, memory: Memory | None = None
) -> Decision:
    return decide(POLICY, readings, NOW, ready, current, memory or read_long_ago(replicas=current))


def test_the_policy_takes_the_spec_in_its_units():
    assert (POLICY.target, POLICY.panic_seconds, POLICY.panic_threshold) == (10.0, 6.0, 2.0)


@pytest.mark.parametrize(
    ("concurrency", "ready", "wanted"),
    [
        (10, 1, 1),  # at the target
        (11, 1, 2),  # above: rounded up
        (35, 4, 4),
        (15, 4, 2),  # down from 4 to 2: at most half a round
        (5, 4, 2),
        (5, 2, 1),
        (400, 4, 10),  # never above maxReplicas
    ],
)
def test_pods_follow_the_stable_window(concurrency, ready, wanted):
    assert run(steady(concurrency), ready, ready).replicas == wanted


def test_a_burst_is_followed_at_once_and_no_pod_goes_until_a_window_passes_without_one():
    readings = [*steady(5, 60)[:-3], Reading(NOW - 4, 60), Reading(NOW - 2, 60), Reading(NOW, 60)]
    burst = run(readings, ready=1, current=1)
    assert burst.replicas == 6  # the short window's 60 in flight, not the minute's average
    assert burst.memory.panicking_since == NOW and "burst" in burst.why
    # The burst is over 30 s later: the minute's average says fewer, but no pod goes yet.
    later = decide(POLICY, steady(5, 30, NOW + 30), NOW + 30, 6, 6, burst.memory)
    assert later.replicas == 6
    # A stable window after the last burst: down, by half at most.
    calm = decide(POLICY, steady(5, 60, NOW + 61), NOW + 61, 6, 6, later.memory)
    assert (calm.replicas, calm.memory.panicking_since) == (3, None)


def test_an_idle_serving_keeps_one_pod_until_its_idle_time_then_goes_to_zero():
    idle = steady(0)
    not_yet = run(idle, 1, 1, read_long_ago(busy_at=NOW - 60))
    assert not_yet.replicas == 1
    gone = run(idle, 1, 1, read_long_ago(busy_at=NOW - 121))
    assert gone.replicas == 0 and "no request in flight for 120 s" in gone.why


def test_min_replicas_holds_however_idle():
    policy = Policy.of(AutoscalingSpec(True, "concurrency", min_replicas=2, target_concurrency=10))
    decision = decide(policy, steady(0), NOW, 4, 4, read_long_ago(busy_at=0.0))
    assert decision.replicas == 2


def test_at_zero_nothing_changes_until_woken_and_a_woken_serving_starts_afresh():
    at_zero = run([], ready=0, current=0, memory=read_long_ago(busy_at=0.0, replicas=0))
    assert at_zero.replicas == 0
    # The activator set the scale to 1: kept while the pod starts, and after it is ready a
    # whole window is read (and the idle time counted again) before it may go.
    woken = decide(POLICY, [], NOW + 5, 0, 1, at_zero.memory)
    assert (woken.replicas, woken.memory.busy_at) == (1, NOW + 5)
    ready = decide(POLICY, [Reading(NOW + 7, 0.0)], NOW + 7, 1, 1, woken.memory)
    assert ready.replicas == 1


def test_without_readings_or_ready_pods_the_count_is_kept():
    assert run([], ready=3, current=3).replicas == 3  # the pods did not answer the scrape
    assert run(steady(0), ready=0, current=2).replicas == 2  # pods starting


def test_no_pod_goes_before_a_whole_window_is_read():
    fresh = Memory.first(NOW - 10)
    assert decide(POLICY, steady(0, 10), NOW, 4, 4, fresh).replicas == 4
    assert decide(POLICY, steady(80, 10), NOW, 4, 4, fresh).replicas == 8  # up at once


def test_pods_not_read_yet_are_not_idle_however_long_they_take():
    # A serving made long ago whose pod took its time to answer: idle from its first reading.
    slow_start = read_long_ago(busy_at=0.0)
    waiting = run([], ready=1, current=1, memory=slow_start)
    assert waiting.replicas == 1 and waiting.memory.busy_at == NOW
    first = decide(POLICY, [Reading(NOW + 2, 0.0)], NOW + 2, 1, 1, waiting.memory)
    assert first.replicas == 1  # idle for 2 s, not for the 1,000 since the serving was made
