"""The sidecar's Prometheus metrics, in a registry of each app's own: requests by route, code and
the model version that answered, latency, TF Serving's latency and auth results.

Counted in plain ints and lists on the event loop (the only thread that counts) and turned into
metric families when scraped: prometheus_client's labelled children take a lock and walk the
buckets in Python on every update, which cost the request path 5 µs of its ~100.

A sampled call (one with spans) marks the latency bucket it fell in with its trace as the
bucket's exemplar (`trace_id`, `span_id`: the latest sampled call's), so that a latency panel
leads to a trace; a call that is not sampled marks nothing. Exemplars exist only in the
OpenMetrics exposition, which a scrape asks for by its Accept header (Prometheus does); the
Prometheus text format has none.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

# Sub-millisecond buckets: the sidecar's own share of a request is measured in them.
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    float("inf"),
)
_LE: tuple[str, ...] = tuple(floatToGoString(b) for b in _BUCKETS)  # type: ignore[no-untyped-call]

_REQUESTS = (
    "modelserving_sidecar_requests",
    "Requests answered by the sidecar, by route, HTTP code and the model version that answered, "
    'or that the request was sent to when TF Serving did not answer ("" when none was).',
)
_LATENCY = (
    "modelserving_sidecar_request_duration_seconds",
    "Time from the request's arrival to its answer, by route and version.",
)
_UPSTREAM_LATENCY = (
    "modelserving_sidecar_upstream_duration_seconds",
    "Time TF Serving took to answer a forwarded request, by route and version.",
)
_SHADOW = (
    "modelserving_sidecar_shadow_requests",
    "Copies of requests a shadow version answered, by HTTP code (the sidecar's own code when "
    "TF Serving did not answer) and version.",
)
_SHADOW_DROPPED = (
    "modelserving_sidecar_shadow_dropped",
    "Copies of requests not sent to the shadow version, by reason: queue_full, unavailable "
    "(the shadow version is not AVAILABLE), shutdown.",
)
# REST's and gRPC's (the gateway's labels are grpc_ and its verb): the served shares in the
# serving's status count both protocols.
_INFERENCE_ROUTES = frozenset(
    {
        "predict",
        "classify",
        "regress",
        "grpc_predict",
        "grpc_classify",
        "grpc_regress",
        "grpc_multi_inference",
    }
)
_IN_FLIGHT = (
    "modelserving_sidecar_requests_in_flight",
    "Requests the sidecar holds now (arrived, not yet answered): every request but the probes' "
    "and the scrapes' (/healthz, /readyz, /metrics), over REST and gRPC.",
)
_CONCURRENCY = (
    "modelserving_sidecar_request_concurrency_seconds",
    "Requests in flight integrated over time, in request-seconds: its rate over an interval is "
    "the average number of requests in flight during it (what a concurrency autoscaler reads).",
)
# The operator's autoscaler asks for these alone (`/metrics?name[]=...`), every 2 s per pod.
CONCURRENCY_METRICS = (_IN_FLIGHT[0], f"{_CONCURRENCY[0]}_total")
_AUTH = (
    "modelserving_sidecar_auth_results",
    "Credential checks by result: allowed, unauthenticated, forbidden, error.",
)


Bucket = tuple[str, float] | tuple[str, float, Exemplar]


class _Histogram:
    """Per-bucket counts (not cumulative) and the sum of what was observed; and, once a sampled
    call was observed, each bucket's exemplar."""

    __slots__ = ("counts", "exemplars", "sum")

    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_BUCKETS, seconds)] += 1  # bounds are inclusive ("le")
        self.sum += seconds

    def mark(self, seconds: float, trace_id: str, span_id: str) -> None:
        """The bucket `seconds` falls in names this trace as its exemplar."""
        if self.exemplars is None:
            self.exemplars = [None] * len(_BUCKETS)
        labels = {"trace_id": trace_id, "span_id": span_id}
        self.exemplars[bisect_left(_BUCKETS, seconds)] = Exemplar(labels, seconds, time.time())

    def cumulative(self) -> list[Bucket]:
        total, buckets = 0, list[Bucket]()
        exemplars = self.exemplars or ()
        for i, (le, count) in enumerate(zip(_LE, self.counts, strict=True)):
            total += count
            exemplar = exemplars[i] if exemplars else None
            buckets.append((le, total) if exemplar is None else (le, total, exemplar))
        return buckets


class SidecarMetrics:
    """The request path's counters and histograms; `route` labels come from a fixed set, and
    `version` labels from the versions TF Serving answered with."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, int, str], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._upstream_latency: dict[tuple[str, str], _Histogram] = {}
        self._auth: dict[tuple[str, str], int] = {}
        self._shadow: dict[tuple[int, str], int] = {}
        self._shadow_dropped: dict[str, int] = {}
        self.concurrency = Concurrency(registry)
        registry.register(self)

    def request_done(self, route: str, code: int, seconds: float, version: str = "") -> None:
        key = (route, code, version)
        self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._latency.get((route, version))
        if histogram is None:
            histogram = self._latency[(route, version)] = _Histogram()
        histogram.observe(seconds)

    def latency_exemplar(
        self, route: str, seconds: float, version: str, trace_id: str, span_id: str
    ) -> None:
        """A sampled call's latency, already counted by `request_done`, marks its bucket with
        the call's trace (its server span) as the exemplar."""
        histogram = self._latency.get((route, version))
        if histogram is not None:
            histogram.mark(seconds, trace_id, span_id)

    def upstream_done(self, route: str, seconds: float, version: str = "") -> None:
        histogram = self._upstream_latency.get((route, version))
        if histogram is None:
            histogram = self._upstream_latency[(route, version)] = _Histogram()
        histogram.observe(seconds)

    def served_by_version(self) -> dict[int, int]:
        """Inference requests answered so far, by the version that answered (shadow copies are
        not requests: they are not counted here)."""
        served: dict[int, int] = {}
        for (route, _, version), count in list(self._requests.items()):
            if version and route in _INFERENCE_ROUTES:
                served[int(version)] = served.get(int(version), 0) + count
        return served

    def auth_result(self, mode: str, result: str) -> None:
        key = (mode, result)
        self._auth[key] = self._auth.get(key, 0) + 1

    def shadow_done(self, code: int, version: str) -> None:
        key = (code, version)
        self._shadow[key] = self._shadow.get(key, 0) + 1

    def shadow_dropped(self, reason: str, count: int = 1) -> None:
        self._shadow_dropped[reason] = self._shadow_dropped.get(reason, 0) + count

    # ---------------------------------------------------------------- prometheus_client

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(*_REQUESTS, labels=("route", "code", "version"))
        yield HistogramMetricFamily(*_LATENCY, labels=("route", "version"))
        yield HistogramMetricFamily(*_UPSTREAM_LATENCY, labels=("route", "version"))
        yield CounterMetricFamily(*_AUTH, labels=("mode", "result"))
        yield CounterMetricFamily(*_SHADOW, labels=("code", "version"))
        yield CounterMetricFamily(*_SHADOW_DROPPED, labels=("reason",))

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*_REQUESTS, labels=("route", "code", "version"))
        for (route, code, version), count in list(self._requests.items()):
            requests.add_metric((route, str(code), version), count)
        yield requests
        for (name, text), histograms in (
            (_LATENCY, self._latency),
            (_UPSTREAM_LATENCY, self._upstream_latency),
        ):
            family = HistogramMetricFamily(name, text, labels=("route", "version"))
            for (route, version), histogram in list(histograms.items()):
                family.add_metric((route, version), histogram.cumulative(), histogram.sum)
            yield family
        auth = CounterMetricFamily(*_AUTH, labels=("mode", "result"))
        for (mode, result), count in list(self._auth.items()):
            auth.add_metric((mode, result), count)
        yield auth
        shadow = CounterMetricFamily(*_SHADOW, labels=("code", "version"))
        for (code, version), count in list(self._shadow.items()):
            shadow.add_metric((str(code), version), count)
        yield shadow
        dropped = CounterMetricFamily(*_SHADOW_DROPPED, labels=("reason",))
        for reason, count in list(self._shadow_dropped.items()):
            dropped.add_metric((reason,), count)
        yield dropped


class Concurrency:
    """Requests in flight, and their integral over time (request-seconds), kept exactly on each
    request's arrival and answer: a clock read and an addition each. Its rate over any interval
    is the time-weighted average of in-flight requests, which a concurrency autoscaler scales on
    (a count sampled once per scrape would miss the bursts between scrapes); any number of
    scrapers read it without resetting it. A collector of its own, so that a scrape asking
    for it alone (`name[]`) builds no other family."""

    __slots__ = ("_clock", "_integral", "_since", "in_flight")

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.monotonic):
        self.in_flight = 0
        self._integral = 0.0  # request-seconds up to `_since`
        self._clock = clock
        self._since = clock()
        registry.register(self)

    def arrived(self) -> None:
        now = self._clock()
        self._integral += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight += 1

    def answered(self) -> None:
        now = self._clock()
        self._integral += self.in_flight * (now - self._since)
        self._since = now
        self.in_flight -= 1

    def request_seconds(self) -> float:
        """The integral up to now, the requests still in flight included."""
        return self._integral + self.in_flight * (self._clock() - self._since)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(*_IN_FLIGHT)
        yield CounterMetricFamily(*_CONCURRENCY)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(*_IN_FLIGHT, value=self.in_flight)
        yield CounterMetricFamily(*_CONCURRENCY, value=self.request_seconds())
