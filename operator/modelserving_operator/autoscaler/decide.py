"""How many pods a serving that scales on concurrency wants: Knative's KPA arithmetic, as pure
functions of the readings, the pods and what was decided before.

The readings are the serving's requests in flight (all its pods together), time-weighted
averages over each round (readings.py). Pods wanted = the average over the stable window
divided by the target per pod, rounded up. A burst, the short (panic) window's average reaching
the threshold of what the ready pods are meant to hold, makes the pods follow the short
window, and no pod goes until a stable window passes without a burst. Down by at most half the
ready pods a round (Knative's max-scale-down-rate 2), so that a window's tail does not take
every pod at once. Zero only with minReplicas 0, after scaleToZeroAfterSeconds without a
request in flight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from modelserving_operator.spec import AutoscalingSpec


@dataclass(frozen=True)
class Policy:
    """A serving's spec.autoscaling, in the units the arithmetic uses."""

    target: float  # requests in flight per pod
    min_replicas: int
    max_replicas: int
    stable_seconds: float
    panic_seconds: float
    panic_threshold: float  # a ratio: 2.0 is 200 %
    zero_after_seconds: float

    @classmethod
    def of(cls, spec: AutoscalingSpec) -> Policy:
        return cls(
            target=float(spec.target_concurrency),
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            stable_seconds=float(spec.stable_window_seconds),
            panic_seconds=spec.stable_window_seconds * spec.panic_window_percent / 100,
            panic_threshold=spec.panic_threshold_percent / 100,
            zero_after_seconds=float(spec.scale_to_zero_after_seconds),
        )


@dataclass(frozen=True)
class Reading:
    """The serving's requests in flight, averaged over the round that ended `at`."""

    at: float
    concurrency: float


@dataclass(frozen=True)
class Memory:
    """What the autoscaler keeps of a serving from round to round."""

    since: float  # the first reading: no pod goes before a whole stable window is read
    busy_at: float  # the last time a request was in flight (or the serving was woken)
    panicking_since: float | None = None  # the last burst seen, while panicking
    panic_pods: int = 0  # the most pods asked for while panicking (never fewer until it ends)
    replicas: int = -1  # the pods asked for at the last round (-1: none yet)

    @classmethod
    def first(cls, now: float) -> Memory:
        return cls(since=now, busy_at=now)


@dataclass(frozen=True)
class Decision:
    replicas: int
    memory: Memory
    why: str  # for the log and the Event: the figures it was decided from


def average(readings: Sequence[Reading], now: float, seconds: float) -> float:
    """The mean of the readings of the last `seconds` (0 when there are none)."""
    within = [r.concurrency for r in readings if r.at > now - seconds]
    return sum(within) / len(within) if within else 0.0


def decide(
    policy: Policy,
    readings: Sequence[Reading],
    now: float,
    ready: int,
    current: int,
    memory: Memory,
) -> Decision:
    """The pods the serving wants now: `ready` pods answer, `current` are asked for."""
    if memory.replicas == 0 and current > 0:
        # Woken (by the activator, or by hand): a new start, as busy as its first request.
        memory = Memory.first(now)
    stable = average(readings, now, policy.stable_seconds)
    panic = average(readings, now, policy.panic_seconds)
    busy_at = now if panic > 0 else memory.busy_at
    # Until its pods are ready and read, nothing says a serving is idle: the idle time and
    # the stable window start again from its first reading.
    unread = Memory(now, now, memory.panicking_since, memory.panic_pods, current)
    if current > 0 and ready == 0:
        return Decision(current, unread, "no pod is ready yet")  # starting, or woken
    if not any(r.at > now - policy.panic_seconds for r in readings):
        # None of the pods answered (at zero: none to read).
        kept = unread if current > 0 else replace(memory, replicas=current)
        return Decision(current, kept, "no reading yet")
    figures = (
        f"{stable:.2f} requests in flight over {policy.stable_seconds:g} s, "
        f"{panic:.2f} over {policy.panic_seconds:g} s"
    )
    pods = max(ready, 1)
    most_up = pods * 1000  # Knative's max-scale-up-rate
    least_down = math.floor(pods / 2)
    want_stable = _clamp(math.ceil(stable / policy.target), least_down, most_up)
    want_panic = _clamp(math.ceil(panic / policy.target), least_down, most_up)
    bursting = panic / policy.target / pods >= policy.panic_threshold
    panicking_since = memory.panicking_since
    if bursting:
        panicking_since = now
    elif panicking_since is not None and now - panicking_since >= policy.stable_seconds:
        panicking_since = None
    if panicking_since is not None:
        wanted = max(want_panic, memory.panic_pods, current)
        panic_pods = wanted
        why = f"a burst: {figures}"
    else:
        wanted, panic_pods, why = want_stable, 0, figures
    if now - memory.since < policy.stable_seconds:
        wanted = max(wanted, current)  # a window not read whole yet takes no pod away
    floor = policy.min_replicas
    if floor == 0 and now - busy_at < policy.zero_after_seconds:
        floor = 1  # idle, but not yet for scaleToZeroAfterSeconds
    if floor == 0 and wanted == 0:
        why = f"no request in flight for {policy.zero_after_seconds:g} s"
    replicas = min(max(wanted, floor), policy.max_replicas)
    return Decision(
        replicas, Memory(memory.since, busy_at, panicking_since, panic_pods, replicas), why
    )


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
