"""The operator's own /metrics, read from the real operator process after it made a serving on
the real cluster: its reconciles, the writes it made by resource, the serving's conditions, the
work queue and kopf's watch streams; and, counted by them, the writes per serving of servings
made at once, against what any operator must write."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from kubernetes import client

from modelserving import api
from modelserving_operator.reconcile import PROGRESS_WRITE_SECONDS
from tests.support.ports import free_port
from tests.support.prometheus import Samples, scrape, series, value
from tests.support.servings import condition, is_ready, serving_manifest
from tests.support.waiting import wait_for

OFF = {"enabled": False}  # no topic: the writes are the servings' and their children's


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

    # And its writes by resource: the children created, the status (with the modelId) patched
    writes = "modelserving_operator_api_writes_total"
    for resource in ("deployments", "services", "configmaps", "serviceaccounts"):
        assert value(samples, writes, resource=resource, verb="create") >= 1, resource
    assert value(samples, writes, resource=api.PLURAL, verb="patch-status") >= 1
    assert not [s for s in series(samples, writes) if refused(s)]

    # And kopf's watch streams, one per watched resource, none restarted yet
    watched = {s["resource"] for s in series(samples, "modelserving_operator_watch_requests_total")}
    assert {api.PLURAL, "deployments", "pods"} <= watched
    assert value(samples, "modelserving_operator_watch_restarts_total") == 0
    assert value(samples, "process_resident_memory_bytes") > 0


def refused(write: dict[str, str]) -> bool:
    """A write the API server refused, but for two conflicts the operator meets by design and
    answers: the modelId counter's (every operator of the cluster, the tests beside this one
    run theirs, takes ids from one annotation of the CRD with optimistic concurrency, so a 409
    there is another operator's block taken first, and the operator takes the next), and a
    create of a child an earlier reconcile made, before the watch cache showed it (found as it
    should be, and left)."""
    counter_conflict = (write["resource"], write["code"]) == ("customresourcedefinitions", "409")
    known_child = (write["verb"], write["code"]) == ("create", "409")
    return not write["code"].startswith("2") and not (counter_conflict or known_child)


def _scrape_or_none(url: str):
    try:
        return scrape(url)
    except OSError:
        return None


# What any operator writes for a serving of the benchmark's writes floor
# (bench/parts/operator_scale.py): its children (a serving with no topic and no autoscaler has
# seven: ServiceAccount, two ConfigMaps, Deployment, Service, NetworkPolicy, RoleBinding) and
# its status, besides the user's create: nine writes. The operator's own are at most as many:
# no write of the serving itself (its modelId goes with its first status), and a status written
# once per change of what it says (taken up, then Ready), never again for what the last write
# said. The cluster's modelId counter (the CRD's annotation) is not a serving's: one write per
# block of up to a hundred ids. A rollout slower than PROGRESS_WRITE_SECONDS (a loaded machine)
# has its progress told at most once per that many seconds on the way: those writes the floor
# makes too, any operator that reports progress.
WRITES_PER_SERVING = 9
EVENTS_PER_SERVING = 2  # of a serving that goes to Ready without trouble: what a user reads
SERVINGS = 5


def test_servings_made_at_once_cost_no_more_writes_than_any_operator_makes(
    operator, crds, kube_client, namespace, metrics_port
):
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_for(lambda: _scrape_or_none(url), timeout=30, what="the operator's /metrics")

    # When servings are made at once and become Ready
    names = [f"s{i}" for i in range(SERVINGS)]
    started = time.monotonic()
    for name in names:
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name, logging=OFF)
        )
    for name in names:
        wait_for(lambda n=name: is_ready(crds, namespace, n), 60, f"{name} Ready")
    samples = wait_for(_settled(url), 60, "the operator idle, its counts still")
    progress_writes = int((time.monotonic() - started) // PROGRESS_WRITE_SECONDS)

    # Then it wrote no more per serving than any operator must, and nothing to the serving
    # itself but its status
    writes = "modelserving_operator_api_writes_total"
    made = {
        (s["resource"], s["verb"], s["code"]): value(samples, writes, **s)
        for s in series(samples, writes)
    }
    # (A create refused with 409 writes nothing: a reconcile that ran before the watch cache
    # showed a child the last one made finds it there as it should be, and leaves it.)
    serving_writes = sum(
        count
        for (resource, _, code), count in made.items()
        if code.startswith("2") and resource != "customresourcedefinitions"
    )
    per_serving = serving_writes / SERVINGS
    assert per_serving <= WRITES_PER_SERVING + progress_writes, str(sorted(made.items()))
    assert value(samples, writes, resource=api.PLURAL, verb="patch") == 0, made
    assert not [s for s in series(samples, writes) if refused(s)], made

    # And it told each serving's story in no more Events than a user reads
    events = client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
    told = Counter(
        e.involved_object.name
        for e in events
        if e.involved_object.kind == api.KIND
        for _ in range(e.count or 1)
    )
    assert set(told) == set(names), told  # each one's: "Created ...; modelId N"
    assert max(told.values()) <= EVENTS_PER_SERVING, told


def _settled(url: str) -> Callable[[], Samples | None]:
    """A poll that answers the operator's samples once two scrapes in a row find its work
    queue empty, no retry pending, and its counts of reconciles and writes unchanged."""
    last: list[tuple[float, ...]] = []

    def settled() -> Samples | None:
        samples = scrape(url)
        idle = not any(
            value(samples, f"modelserving_operator_{gauge}")
            for gauge in ("queue_depth", "queue_active", "retries_pending")
        )
        counts = (
            value(samples, "modelserving_operator_reconciles_total"),
            value(samples, "modelserving_operator_api_writes_total"),
        )
        still = idle and last == [counts]
        last[:] = [counts] if idle else []
        return samples if still else None

    return settled
