"""The activator's counters of a serving that may go to zero start at 0, before its first wake or
refusal: a series that first appears at 1 gives increase() and rate() nothing to start from, so
the dashboard and the ModelServingWakeFailing alert would miss a serving's first event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from modelserving_sidecar.activator.hosts import ServingRef, serving_of
from modelserving_sidecar.activator.metrics import ActivatorMetrics

AT_ZERO = {"enabled": True, "metric": "concurrency", "minReplicas": 0}


def serving(name: str, autoscaling: dict | None = None) -> dict:
    spec = {"autoscaling": autoscaling} if autoscaling else {}
    return {"metadata": {"namespace": "team", "name": name, "uid": name}, "spec": spec}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_counters_of_a_serving_that_may_go_to_zero_start_at_zero_and_go_with_it():
    registry = CollectorRegistry()
    metrics = ActivatorMetrics(registry, dict)
    idle = serving_of(serving("idle", AT_ZERO))
    busy = serving_of(serving("busy", {**AT_ZERO, "minReplicas": 1}))
    assert idle.to_zero and not busy.to_zero
    # Refusals with no serving to name start at 0 too.
    assert (
        value(
            registry,
            "modelserving_activator_refused_requests_total",
            namespace="",
            serving="",
            reason="unknown_host",
        )
        == 0
    )

    metrics.known([s.ref for s in (idle, busy) if s.to_zero])
    of_idle = {"namespace": "team", "serving": "idle"}
    for result in ("scaled", "already_scaled", "failed"):
        assert value(registry, "modelserving_activator_wakes_total", **of_idle, result=result) == 0
    assert value(registry, "modelserving_activator_forwarded_requests_total", **of_idle) == 0
    assert (
        value(
            registry,
            "modelserving_activator_refused_requests_total",
            **of_idle,
            reason="no_credentials",
        )
        == 0
    )
    # One that never goes to zero has none: the activator never holds its requests.
    assert (
        value(
            registry,
            "modelserving_activator_wakes_total",
            namespace="team",
            serving="busy",
            result="scaled",
        )
        is None
    )

    # A wake counts from there; and a serving no longer at zero loses its series.
    metrics.woken(ServingRef("team", "idle"), "scaled")
    assert value(registry, "modelserving_activator_wakes_total", **of_idle, result="scaled") == 1
    metrics.keep(ServingRef("team", "idle"), False)
    assert value(registry, "modelserving_activator_wakes_total", **of_idle, result="failed") is None
    metrics.known([ServingRef("team", "idle")])
    assert value(registry, "modelserving_activator_wakes_total", **of_idle, result="scaled") == 0
