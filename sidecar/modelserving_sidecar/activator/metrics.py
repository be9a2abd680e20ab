"""The activator's Prometheus metrics, in a registry of its own: requests held per serving (read
from the hold queues when scraped), wakes by result, the wake's time (first request held to
first usable pod), requests forwarded, and requests refused by reason."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from modelserving_sidecar.activator.hosts import ServingRef

# From a pod that is ready at once to a model of gigabytes loaded from object storage.
WAKE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# Why a request was refused (the `reason` label).
REFUSALS = (
    "unknown_host",  # 404: no serving answers to its Host
    "shared_host",  # 404: several servings do
    "no_credentials",  # 401: none in the scheme of the serving's auth mode
    "queue_full",  # 503: the serving's hold queue was full
    "held_too_long",  # 503: no usable pod before the request's deadline
    "stopping",  # 503: the activator stopped while it was held
    "too_large",  # 413: a body over --max-request-bytes (gRPC: over 1 MiB sent while held)
    "pod_failed",  # 502: the pod took the request and gave no answer
    "not_grpc",  # gRPC port: a connection that sent no gRPC call the activator can read
)
# The refusals counted before a serving is known (no serving label), and those of a serving.
HOST_REFUSALS = ("unknown_host", "shared_host", "not_grpc")
SERVING_REFUSALS = tuple(r for r in REFUSALS if r not in ("unknown_host", "shared_host"))
WAKE_RESULTS = ("scaled", "already_scaled", "failed")


class _Held:
    """modelserving_activator_requests_held, per serving, as the queues hold them now."""

    def __init__(self, held: Callable[[], Mapping[ServingRef, int]]) -> None:
        self._held = held

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "modelserving_activator_requests_held",
            "Requests held for a serving that has no usable pod yet.",
            labels=["namespace", "serving"],
        )
        for ref, count in sorted(self._held().items()):
            family.add_metric([ref.namespace, ref.name], count)
        yield family


class ActivatorMetrics:
    def __init__(
        self, registry: CollectorRegistry, held: Callable[[], Mapping[ServingRef, int]]
    ) -> None:
        self.registry = registry
        registry.register(_Held(held))
        self._wakes = Counter(
            "modelserving_activator_wakes",
            "Wakes of servings by result: scaled (0 -> 1), already_scaled (a pod was already "
            "asked for), failed (the scale could not be written).",
            ["namespace", "serving", "result"],
            registry=registry,
        )
        self._wake_seconds = Histogram(
            "modelserving_activator_wake_seconds",
            "Time from a serving's first held request to its first usable pod.",
            buckets=WAKE_BUCKETS,
            registry=registry,
        )
        self._forwarded = Counter(
            "modelserving_activator_forwarded_requests",
            "Requests forwarded to a serving's pod (answered by its sidecar, whatever the code).",
            ["namespace", "serving"],
            registry=registry,
        )
        self._refused = Counter(
            "modelserving_activator_refused_requests",
            "Requests the activator answered itself, by reason: " + ", ".join(REFUSALS) + ".",
            ["namespace", "serving", "reason"],
            registry=registry,
        )
        for reason in HOST_REFUSALS:  # counted without a serving: from 0 as well
            self._refused.labels("", "", reason)
        self._known: set[ServingRef] = set()

    def known(self, refs: Iterable[ServingRef]) -> None:
        """Each serving that may go to zero has its counters from 0, the others none: a series
        that first appears at 1 has no sample for increase() and rate() to start from, and the
        dashboard and ModelServingWakeFailing would miss a serving's first wake, or refusal.
        `refs`: all the servings that may go to zero, as a new list says."""
        wanted = set(refs)
        for ref in self._known - wanted:
            self.keep(ref, False)
        for ref in wanted - self._known:
            self.keep(ref, True)

    def keep(self, ref: ServingRef, to_zero: bool) -> None:
        """One serving's counters from 0 when it may go to zero; none when it may not (or is
        gone)."""
        if to_zero == (ref in self._known):
            return
        labels = (ref.namespace, ref.name)
        series: list[tuple[Counter, tuple[str, ...]]] = [
            *((self._wakes, (*labels, result)) for result in WAKE_RESULTS),
            (self._forwarded, labels),
            *((self._refused, (*labels, reason)) for reason in SERVING_REFUSALS),
        ]
        if to_zero:
            self._known.add(ref)
            for counter, values in series:
                counter.labels(*values)
        else:
            self._known.discard(ref)
            for counter, values in series:
                counter.remove(*values)

    def woken(self, ref: ServingRef, result: str) -> None:
        self._wakes.labels(ref.namespace, ref.name, result).inc()

    def wake_took(self, seconds: float) -> None:
        self._wake_seconds.observe(seconds)

    def forwarded(self, ref: ServingRef) -> None:
        self._forwarded.labels(ref.namespace, ref.name).inc()

    def refused(self, reason: str, ref: ServingRef | None = None) -> None:
        namespace, name = (ref.namespace, ref.name) if ref else ("", "")
        self._refused.labels(namespace, name, reason).inc()
