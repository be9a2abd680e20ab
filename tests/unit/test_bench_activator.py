"""The activator benchmark's arithmetic (bench/comparisons/compare_activator): each activator
run set beside the direct runs either side of it, and a wake's figures from its times."""

from __future__ import annotations

import pytest

from tests.support.scripts import load_bench

compare = load_bench("comparisons.compare_activator")


def test_each_b_run_is_set_beside_the_mean_of_the_a_runs_either_side():
    assert compare.bracketed([1.0, 3.0, 5.0], [4.0, 10.0]) == [2.0, 6.0]


def test_a_b_run_without_an_a_run_on_each_side_is_refused():
    with pytest.raises(ValueError):
        compare.bracketed([1.0, 2.0], [3.0, 4.0])


def test_the_activators_share_is_the_answer_time_minus_the_pods_ready_time():
    wake = compare.Wake(sent=10.0, scaled=10.3, ready=10.36, first_answer=10.37, last_answer=10.4)
    figures = compare.wake_figures(wake)
    assert figures == {
        "first_answer_ms": 370.0,
        "answer_ms": 400.0,
        "pod_ready_ms": 60.0,
        "activator_share_ms": 340.0,
        "wake_ms": 300.0,
        "after_ready_ms": 40.0,
    }
    # The share is the wake and the forward: what is not the pod's own.
    assert figures["activator_share_ms"] == figures["wake_ms"] + figures["after_ready_ms"]


def test_summary_gives_median_min_and_max():
    assert compare.summary([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
