"""What localenv says while it builds its parts: which step runs and where it is among those to
build, a heartbeat with the time so far while a step runs, and a summary with each step's time
or `cached` at the end, so that a newcomer's first `make demo` does not sit silent for minutes."""

from __future__ import annotations

import threading

import pytest

from tests.support.environment import localenv
from tests.support.waiting import wait_for


class Said:
    """What a build said, in order (the heartbeat speaks from its own thread)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)


class Clock:
    """A clock that moves 15 s each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 15.0
        return self.now


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (42.9, "42s"), (60, "1m00s"), (192, "3m12s"), (3725, "1h02m05s")],
)
def test_durations_read_as_minutes_and_seconds(seconds, shown):
    assert localenv.format_duration(seconds) == shown


def test_steps_are_counted_among_those_to_build():
    progress = localenv.BuildProgress(cached=frozenset({"Kafka", "etcd"}), say=Said())
    assert progress.to_build[0] == "KWOK"
    assert progress.position("KWOK") == "(1/8)"
    assert progress.position("kube-apiserver") == "(5/8)"
    assert progress.position("kubectl") == "(8/8)"
    plan = progress.plan()
    assert plan.startswith("building KWOK, helm, Jaeger, Kubernetes modules, kube-apiserver,")
    assert "cached: Kafka, etcd" in plan


def test_a_running_step_says_so_with_its_time_until_it_ends():
    said = Said()
    progress = localenv.BuildProgress(cached=frozenset(), say=said, heartbeat_s=0.01, clock=Clock())
    with progress.step("kube-apiserver"):
        # The step runs until the heartbeat has spoken twice.
        wait_for(lambda: len(said.lines) >= 3, timeout=30, what="two heartbeats")
    lines = said.lines
    assert lines[0] == "building kube-apiserver (7/10)"
    assert lines[1] == "building kube-apiserver (7/10) ... 15s"
    assert lines[2] == "building kube-apiserver (7/10) ... 30s"
    assert lines[-1].startswith("built kube-apiserver (7/10) in ")
    assert all(line.startswith("building kube-apiserver (7/10) ... ") for line in lines[1:-1])
    # Once the step has ended, nothing more is said about it.
    count = len(said.lines)
    threading.Event().wait(0.05)
    assert len(said.lines) == count


def test_a_failed_step_stops_its_heartbeat():
    said = Said()
    progress = localenv.BuildProgress(cached=frozenset(), say=said, heartbeat_s=0.01)
    with pytest.raises(localenv.EnvError), progress.step("etcd"):
        raise localenv.EnvError("go build failed")
    assert not [t for t in threading.enumerate() if t.name == "heartbeat etcd"]
    assert "etcd" not in progress.times


def test_the_summary_gives_each_step_its_time_or_cached():
    cached = frozenset({"Kafka", "etcd", "KWOK", "helm"})
    progress = localenv.BuildProgress(cached=cached, say=Said(), clock=Clock())
    for name in progress.to_build:
        with progress.step(name):
            pass
    lines = progress.summary(total_s=321)
    assert lines[0] == f"builds ready in {localenv.CACHE} in 5m21s:"
    rows = {line.split()[0]: line.split()[-1] for line in lines[1:] if " modules " not in line}
    assert rows["Kafka"] == rows["helm"] == "cached"
    assert rows["kube-apiserver"] == rows["kubectl"] == "15s"
    assert len(lines) == 1 + len(localenv.BUILD_STEPS)


def test_a_build_with_everything_cached_says_so_in_one_line():
    progress = localenv.BuildProgress(cached=frozenset(localenv.BUILD_STEPS), say=Said())
    assert progress.to_build == []
    assert progress.summary(total_s=0.2) == [
        f"builds ready in {localenv.CACHE}: all 10 parts cached"
    ]
