"""The operator's own metrics: what is counted for reconciles, the work queue, API writes, the
servings' conditions and kopf's watch streams, read back as Prometheus scrapes them."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from modelserving import api
from modelserving_operator.kube import object_path
from modelserving_operator.metrics import (
    ApiWrites,
    OperatorMetrics,
    QueueState,
    WatchStreams,
    registry_of,
    serve_metrics,
)
from modelserving_operator.runtime.workqueue import WorkQueue
from tests.support.ports import free_port


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_reconciles_are_counted_by_outcome_with_their_durations():
    metrics = OperatorMetrics()
    metrics.reconciled("done", 0.02)
    metrics.reconciled("done", 0.03)
    metrics.reconciled("retry", 3.0)

    samples = scrape(registry_of(metrics))

    total = "modelserving_operator_reconciles_total"
    assert samples[(total, (("outcome", "done"),))] == 2
    assert samples[(total, (("outcome", "retry"),))] == 1
    assert samples[(total, (("outcome", "error"),))] == 0  # every outcome, from the start
    duration = "modelserving_operator_reconcile_duration_seconds"
    assert samples[(f"{duration}_count", ())] == 3
    assert samples[(f"{duration}_bucket", (("le", "0.025"),))] == 1
    assert samples[(f"{duration}_bucket", (("le", "5.0"),))] == 3
    assert abs(samples[(f"{duration}_sum", ())] - 3.05) < 1e-9


def test_write_requests_are_counted_by_resource_verb_and_answer_and_reads_are_not():
    writes = ApiWrites()
    deployment = object_path("Deployment", "mnist", "team-a")
    writes.count("PATCH", deployment, "application/apply-patch+yaml", 200)
    writes.count("PATCH", deployment, "application/apply-patch+yaml", 409)
    status = object_path(api.KIND, "mnist", "team-a") + "/status"
    writes.count("PATCH", status, "application/merge-patch+json", 200)
    writes.count("DELETE", object_path("ClusterRoleBinding", "x"), "application/json", 0)
    writes.count("POST", object_path("ConfigMap", None, "ops"), "application/json", 201)
    writes.count("GET", deployment, "application/json", 200)

    samples = scrape(registry_of(OperatorMetrics(writes)))

    def written(resource: str, verb: str, code: str) -> float:
        labels = (("code", code), ("resource", resource), ("verb", verb))
        return samples[("modelserving_operator_api_writes_total", labels)]

    assert written("deployments", "apply", "200") == 1
    assert written("deployments", "apply", "409") == 1
    assert written(api.PLURAL, "patch-status", "200") == 1
    assert written("clusterrolebindings", "delete", "unreachable") == 1
    assert written("configmaps", "create", "201") == 1
    assert sum(v for (name, _), v in samples.items() if name.endswith("api_writes_total")) == 5


def test_servings_are_counted_by_namespace_and_each_conditions_status_and_reason():
    def serving(namespace: str, ready: str, reason: str) -> dict:
        conditions = [
            {"type": "Ready", "status": ready, "reason": reason},
            {"type": "LoggingReady", "status": "True", "reason": "TopicReady"},
        ]
        return {"metadata": {"namespace": namespace}, "status": {"conditions": conditions}}

    servings = [
        serving("team-a", "True", "Available"),
        serving("team-a", "False", "ModelLoadFailed"),
        serving("team-a", "False", "ModelLoadFailed"),
        serving("team-b", "False", "ModelLoadFailed"),
        {"metadata": {"namespace": "team-a", "name": "new"}},  # no status yet
    ]
    metrics = OperatorMetrics()
    metrics.observe(lambda: QueueState(0, 0, 0.0, 0), lambda: servings)

    samples = scrape(registry_of(metrics))

    def servings_in(namespace: str, condition: str, status: str, reason: str) -> float:
        labels = (
            ("condition", condition),
            ("namespace", namespace),
            ("reason", reason),
            ("status", status),
        )
        return samples.get(("modelserving_operator_servings", labels), 0)

    assert servings_in("team-a", "Ready", "True", "Available") == 1
    assert servings_in("team-a", "Ready", "False", "ModelLoadFailed") == 2
    assert servings_in("team-b", "Ready", "False", "ModelLoadFailed") == 1
    assert servings_in("team-a", "LoggingReady", "True", "TopicReady") == 3
    total = sum(v for (name, _), v in samples.items() if name == "modelserving_operator_servings")
    assert total == 8  # the serving without a status has no condition to count


async def test_the_queue_reports_what_waits_how_long_and_each_wait_as_it_ends():
    queue, waits = WorkQueue(), []
    queue.on_wait = waits.append
    queue.add(("ns", "a"), serving_event=True)
    await asyncio.sleep(0.05)
    queue.add(("ns", "b"), serving_event=False)
    queue.add(("ns", "a"), serving_event=False)  # marked again: still the first mark's wait

    assert queue.waiting() == 2 and queue.active() == 0
    assert queue.oldest_wait() >= 0.05

    key, _ = await queue.get()
    assert key == ("ns", "a") and len(waits) == 1 and waits[0] >= 0.05
    assert queue.waiting() == 1 and queue.active() == 1
    assert queue.oldest_wait() < 0.05  # b's, marked later
    queue.forget(("ns", "b"))
    assert queue.oldest_wait() == 0.0


def test_queue_gauges_and_wait_histogram_come_from_the_queue_when_scraped():
    metrics = OperatorMetrics()
    state = QueueState(waiting=7, active=2, oldest_wait_seconds=12.5, retries_pending=3)
    metrics.observe(lambda: state, lambda: ())
    metrics.waited(0.2)
    metrics.waited(40.0)

    samples = scrape(registry_of(metrics))

    assert samples[("modelserving_operator_queue_depth", ())] == 7
    assert samples[("modelserving_operator_queue_active", ())] == 2
    assert samples[("modelserving_operator_queue_oldest_wait_seconds", ())] == 12.5
    assert samples[("modelserving_operator_retries_pending", ())] == 3
    assert samples[("modelserving_operator_queue_wait_seconds_count", ())] == 2
    assert samples[("modelserving_operator_queue_wait_seconds_bucket", (("le", "0.25"),))] == 1


def test_watch_restarts_are_the_listings_after_the_first():
    watches = WatchStreams()
    for _ in range(3):
        watches.listed("deployments")
    watches.listed("pods")
    for _ in range(5):
        watches.watched("deployments")
    metrics = OperatorMetrics()
    metrics.watches = watches

    samples = scrape(registry_of(metrics))

    restarts = "modelserving_operator_watch_restarts_total"
    assert samples[(restarts, (("resource", "deployments"),))] == 2
    assert samples[(restarts, (("resource", "pods"),))] == 0
    requests = "modelserving_operator_watch_requests_total"
    assert samples[(requests, (("resource", "deployments"),))] == 5


async def test_metrics_are_served_on_the_configured_port_and_path_with_the_process_figures():
    metrics = OperatorMetrics()
    metrics.reconciled("done", 0.01)
    port = free_port()
    runner = await serve_metrics(registry_of(metrics), port, "/op-metrics")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/op-metrics") as response:
                body = await response.text()
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404
    finally:
        await runner.cleanup()
    assert 'modelserving_operator_reconciles_total{outcome="done"} 1.0' in body
    assert "process_resident_memory_bytes" in body
