"""The operator's own /metrics, read from the real operator process after it made a serving on
the real cluster: its reconciles, the writes it made by resource, the serving's conditions, the
work queue and kopf's watch streams."""

from __future__ import annotations

import pytest

from modelserving import api
from tests.support.ports import free_port
from tests.support.prometheus import scrape, series, value
from tests.support.servings import condition, is_ready, serving_manifest
from tests.support.waiting import wait_for


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def operator_flags(metrics_port: int) -> list[str]:
    """The operator of these tests serves its metrics on a port of the test's own."""
    return ["--metrics-port", str(metrics_port)]


def test_the_operator_counts_what_it_did_for_a_new_serving(
    operator, crds, namespace, topic, metrics_port
):
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    # Given an operator that has just started
    before = wait_for(lambda: _scrape_or_none(url), timeout=30, what="the operator's /metrics")
    assert value(before, "modelserving_operator_reconciles_total") == 0

    # When a serving is created and becomes Ready
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"kafka": {"topic": f"{namespace}.{topic}"}}),
    )
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist"), 60, "the serving Ready")
    ready = condition(serving, "Ready")

    # Then /metrics counts the serving by its Ready condition, as its status holds it
    ready_now = {
        "namespace": namespace,
        "condition": "Ready",
        "status": "True",
        "reason": ready["reason"],
    }

    def counted():
        samples = scrape(url)
        return samples if value(samples, "modelserving_operator_servings", **ready_now) else None

    samples = wait_for(counted, 30, "the Ready serving counted in /metrics")
    assert value(samples, "modelserving_operator_servings", **ready_now) == 1
    assert (
        value(samples, "modelserving_operator_servings", namespace=namespace, condition="Ready")
        == 1
    )
    assert (
        value(
            samples,
            "modelserving_operator_servings",
            namespace=namespace,
            condition="LoggingReady",
            status="True",
            reason="TopicReady",
        )
        == 1
    )

    # And the reconciles it ran, each of them taken from the queue after a measured wait
    reconciles = value(samples, "modelserving_operator_reconciles_total", outcome="done")
    assert reconciles >= 2  # created, then made Ready by the Deployment's status
    assert value(samples, "modelserving_operator_reconciles_total", outcome="error") == 0
    assert value(samples, "modelserving_operator_reconcile_duration_seconds_count") >= reconciles
    assert value(samples, "modelserving_operator_queue_wait_seconds_count") >= reconciles
    assert value(samples, "modelserving_operator_queue_depth") >= 0

    # And its writes by resource: the children created, the status patched, the id assigned
    writes = "modelserving_operator_api_writes_total"
    for resource in ("deployments", "services", "configmaps", "serviceaccounts"):
        assert value(samples, writes, resource=resource, verb="create") >= 1, resource
    assert value(samples, writes, resource=api.PLURAL, verb="patch-status") >= 1
    assert value(samples, writes, resource=api.PLURAL, verb="patch") >= 1  # the modelId
    assert not [s for s in series(samples, writes) if not s["code"].startswith("2")]

    # And kopf's watch streams, one per watched resource, none restarted yet
    watched = {s["resource"] for s in series(samples, "modelserving_operator_watch_requests_total")}
    assert {api.PLURAL, "deployments", "pods"} <= watched
    assert value(samples, "modelserving_operator_watch_restarts_total") == 0
    assert value(samples, "process_resident_memory_bytes") > 0


def _scrape_or_none(url: str):
    try:
        return scrape(url)
    except OSError:
        return None
