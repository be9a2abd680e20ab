"""The operator's own Prometheus metrics: reconciles and their outcome, the work queue, the API
writes it makes, its servings by condition, and its watch streams; served on /metrics.

Counted in plain ints on the event loop (the one thread that counts) and turned into metric
families when scraped, on the same loop, so nothing is locked or copied per event. What the
queue and the servings look like is read from the live objects at scrape time.

What the queue figures measure: the operator's own work queue (`workqueue.py`), from a serving
being marked by an event to a worker taking it. kopf's per-object event queues in front of the
handlers are not measured (no public API says what waits in them): with one kopf worker per
object (no limit is set), an event waits there only while the same object's earlier events run
their handlers, which only mark the work queue, and at the start until every index is filled.
The wait that grows under load is the one measured here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

PREFIX = "modelserving_operator"
# Reconciles take milliseconds when nothing differs and seconds when the API server is slow.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# A reconcile's outcome: "done" (nothing left to do), "retry" (a step failed and is retried:
# an API error, Kafka unreachable), "error" (an unexpected exception; retried too), "gone" (the
# serving was deleted or is being deleted when its turn came).
OUTCOMES = ("done", "retry", "error", "gone")


class Histogram:
    """Per-bucket counts (not cumulative) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bounds are inclusive ("le")
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        total, buckets = 0, list[tuple[str, float]]()
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        return buckets


def write_verb(method: str, path: str, content_type: str) -> str:
    """What a write request does, in kubectl's words: apply, create, update, patch, delete;
    a patch of the status subresource is `patch-status`."""
    if method == "PATCH":
        verb = "apply" if content_type == "application/apply-patch+yaml" else "patch"
        return f"{verb}-status" if path.endswith("/status") else verb
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


def resource_of(method: str, path: str) -> str:
    """The resource (plural) a write request's path names: .../PLURAL for a create, else
    .../PLURAL/NAME[/status]."""
    parts = path.removesuffix("/status").rstrip("/").split("/")
    return parts[-1] if method == "POST" else parts[-2]


@dataclass
class ApiWrites:
    """The operator's own write requests to the API server, by resource, verb and answer (the
    HTTP code, or `unreachable`). kopf's own writes (Events, peering) are not among them."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def count(self, method: str, path: str, content_type: str, code: int) -> None:
        if method == "GET":
            return
        key = (
            resource_of(method, path),
            write_verb(method, path, content_type),
            str(code) if code else "unreachable",
        )
        self.counts[key] = self.counts.get(key, 0) + 1


@dataclass
class WatchStreams:
    """The watch streams, per resource (kopf's of the servings, the operator's own of the
    children and pods, runtime/watches): every watch request (renewed each --watch-timeout,
    or after a dropped connection) and every restart from a fresh listing (the API server no
    longer knew the stream's place, 410 Gone; a listing failed; peering paused the operator)."""

    requests: dict[str, int] = field(default_factory=dict)
    listings: dict[str, int] = field(default_factory=dict)

    def listed(self, resource: str) -> None:
        self.listings[resource] = self.listings.get(resource, 0) + 1

    def watched(self, resource: str) -> None:
        self.requests[resource] = self.requests.get(resource, 0) + 1


def servings_by_condition(
    servings: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str, str, str], int]:
    """How many servings of each namespace have each condition in each status and reason, as
    their status holds it: (namespace, condition, status, reason) -> count. Counts, not a
    series per serving: a thousand servings' four conditions each would make a scrape of
    4,000 samples, formatting which stalls the operator's event loop."""
    found: dict[tuple[str, str, str, str], int] = {}
    for serving in servings:
        namespace = (serving.get("metadata") or {}).get("namespace", "")
        for cond in (serving.get("status") or {}).get("conditions") or []:
            key = (
                namespace,
                str(cond.get("type", "")),
                str(cond.get("status", "Unknown")),
                str(cond.get("reason", "")),
            )
            found[key] = found.get(key, 0) + 1
    return found


@dataclass(frozen=True)
class QueueState:
    """What the work queue holds at one moment."""

    waiting: int  # servings marked and not yet taken by a worker
    active: int  # servings being reconciled
    oldest_wait_seconds: float  # how long the longest-waiting serving has waited (0: none)
    retries_pending: int  # servings whose retry timer runs


class OperatorMetrics:
    """Everything the operator counts, and a prometheus_client collector of it. `observe` sets
    what is read at scrape time: the queue's state and the servings the operator watches."""

    def __init__(self, api_writes: ApiWrites | None = None) -> None:
        self.reconciles: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.reconcile_seconds = Histogram(_BUCKETS)
        self.queue_wait_seconds = Histogram(_WAIT_BUCKETS)
        self.api_writes = api_writes if api_writes is not None else ApiWrites()
        self.watches = WatchStreams()
        self._queue: Callable[[], QueueState] = lambda: QueueState(0, 0, 0.0, 0)
        self._servings: Callable[[], Iterable[Mapping[str, Any]]] = lambda: ()

    def observe(
        self,
        queue: Callable[[], QueueState],
        servings: Callable[[], Iterable[Mapping[str, Any]]],
    ) -> None:
        self._queue, self._servings = queue, servings

    def reconciled(self, outcome: str, seconds: float) -> None:
        self.reconciles[outcome] = self.reconciles.get(outcome, 0) + 1
        self.reconcile_seconds.observe(seconds)

    def waited(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    # ---------------------------------------------------------------- prometheus_client

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on demand: no families registered up front

    def collect(self) -> Iterator[Metric]:
        reconciles = CounterMetricFamily(
            f"{PREFIX}_reconciles",
            "Reconciles of a serving, by outcome: done, retry (a step failed and is tried again),"
            " error (an unexpected exception), gone (deleted before its turn)",
            labels=("outcome",),
        )
        for outcome, count in self.reconciles.items():
            reconciles.add_metric((outcome,), count)
        yield reconciles
        duration = HistogramMetricFamily(
            f"{PREFIX}_reconcile_duration_seconds", "Time one reconcile of a serving took"
        )
        duration.add_metric((), self.reconcile_seconds.cumulative(), self.reconcile_seconds.sum)
        yield duration
        wait = HistogramMetricFamily(
            f"{PREFIX}_queue_wait_seconds",
            "Time from an event marking a serving in the work queue to a worker taking it",
        )
        wait.add_metric((), self.queue_wait_seconds.cumulative(), self.queue_wait_seconds.sum)
        yield wait
        queue = self._queue()
        for name, text, value in (
            (
                "queue_depth",
                "Servings marked in the work queue, not yet taken by a worker",
                queue.waiting,
            ),
            ("queue_active", "Servings being reconciled", queue.active),
            (
                "queue_oldest_wait_seconds",
                "How long the serving waiting longest in the work queue has waited (0: none waits)",
                queue.oldest_wait_seconds,
            ),
            (
                "retries_pending",
                "Servings whose reconcile failed and waits for its retry",
                queue.retries_pending,
            ),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", text)
            gauge.add_metric((), value)
            yield gauge
        writes = CounterMetricFamily(
            f"{PREFIX}_api_writes",
            "The operator's write requests to the Kubernetes API, by resource, verb and answer "
            "(HTTP code, or unreachable)",
            labels=("resource", "verb", "code"),
        )
        for key, count in list(self.api_writes.counts.items()):
            writes.add_metric(key, count)
        yield writes
        conditions = GaugeMetricFamily(
            f"{PREFIX}_servings",
            "Servings the operator watches, by namespace and each condition's status and "
            "reason, as their status holds them (Ready True/False with its reason)",
            labels=("namespace", "condition", "status", "reason"),
        )
        for state, count in servings_by_condition(self._servings()).items():
            conditions.add_metric(state, count)
        yield conditions
        requests = CounterMetricFamily(
            f"{PREFIX}_watch_requests",
            "Watch requests kopf opened, by resource (renewed every --watch-timeout seconds)",
            labels=("resource",),
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_watch_restarts",
            "Watches of a resource restarted from a fresh listing: the API server no longer knew "
            "the stream's place (410 Gone), a listing failed, or peering paused the operator",
            labels=("resource",),
        )
        for resource, count in list(self.watches.listings.items()):
            restarts.add_metric((resource,), count - 1)  # the first listing starts the watch
            requests.add_metric((resource,), self.watches.requests.get(resource, 0))
        yield requests
        yield restarts


def registry_of(metrics: OperatorMetrics) -> CollectorRegistry:
    """A registry of the operator's metrics and the process's own (memory, CPU, open files, GC)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


async def serve_metrics(registry: CollectorRegistry, port: int, path: str) -> web.AppRunner:
    """Serve `registry` on http://0.0.0.0:PORT/PATH, on the running event loop (the counters are
    read on the loop that counts them); call `cleanup()` on the runner to stop."""

    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get(path, scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
