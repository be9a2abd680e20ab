"""What the concurrency autoscaler reads of a pod (autoscaler/readings.py): the two metrics
alone, from the sidecar's own exposition, and a round's concurrency from two reads."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from modelserving_operator.autoscaler.readings import (
    PodRead,
    parse,
    pod_concurrency,
    serving_concurrency,
)
from modelserving_sidecar.metrics import CONCURRENCY_METRICS, SidecarMetrics


def test_the_sidecars_own_exposition_parses_to_in_flight_and_request_seconds():
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.concurrency.arrived()
    metrics.concurrency.arrived()
    in_flight, seconds = parse(
        generate_latest(registry.restricted_registry(CONCURRENCY_METRICS)).decode()
    ) or (0, -1)
    assert in_flight == 2 and seconds >= 0


def test_a_page_without_both_metrics_is_no_reading():
    assert parse("modelserving_sidecar_requests_in_flight 3\n") is None
    assert parse("<html>not metrics</html>") is None


def test_a_pods_concurrency_is_the_rate_of_its_request_seconds():
    before = PodRead(at=10.0, in_flight=0, request_seconds=100.0)
    assert pod_concurrency(before, PodRead(12.0, 1, 107.0)) == 3.5
    # First read, or a sidecar started again (its integral restarted): what it holds now.
    assert pod_concurrency(None, PodRead(12.0, 4, 7.0)) == 4
    assert pod_concurrency(before, PodRead(12.0, 1, 3.0)) == 1


def test_a_servings_concurrency_sums_the_pods_read_this_round():
    before = {"a": PodRead(10.0, 0, 0.0), "gone": PodRead(10.0, 9, 50.0)}
    now = {"a": PodRead(12.0, 0, 4.0), "new": PodRead(12.0, 2, 0.5)}
    assert serving_concurrency(before, now) == 2.0 + 2


def test_a_page_of_counts_that_are_not_finite_or_are_negative_is_no_reading():
    # Whatever answers at a pod's address: one such page must not make the arithmetic raise
    # (math.ceil of infinity) or scale on nonsense.
    for bad in ("NaN", "+Inf", "-Inf", "-1"):
        page = (
            f"modelserving_sidecar_requests_in_flight {bad}\n"
            "modelserving_sidecar_request_concurrency_seconds_total 3.0\n"
        )
        assert parse(page) is None, bad
        swapped = (
            "modelserving_sidecar_requests_in_flight 1\n"
            f"modelserving_sidecar_request_concurrency_seconds_total {bad}\n"
        )
        assert parse(swapped) is None, bad
