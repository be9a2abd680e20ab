"""The sidecar's Prometheus metrics, in a registry of each app's own: requests by route and code,
latency, TF Serving's latency and auth results. Labelled children are bound once and cached.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
)


class SidecarMetrics:
    """The request path's counters and histograms; `route` labels come from a fixed set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "modelserving_sidecar_requests",
            "Requests answered by the sidecar, by route and HTTP code.",
            ["route", "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "modelserving_sidecar_request_duration_seconds",
            "Time from the request's arrival to its answer, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._upstream_latency = Histogram(
            "modelserving_sidecar_upstream_duration_seconds",
            "Time TF Serving took to answer a forwarded request, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self._auth = Counter(
            "modelserving_sidecar_auth_results",
            "Credential checks by result: allowed, unauthenticated, forbidden, error.",
            ["mode", "result"],
            registry=registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self._upstream_children: dict[str, Histogram] = {}
        self._auth_children: dict[tuple[str, str], Counter] = {}

    def request_done(self, route: str, code: int, seconds: float) -> None:
        key = (route, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(route, str(code))
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self._latency.labels(route)
        histogram.observe(seconds)

    def upstream_done(self, route: str, seconds: float) -> None:
        histogram = self._upstream_children.get(route)
        if histogram is None:
            histogram = self._upstream_children[route] = self._upstream_latency.labels(route)
        histogram.observe(seconds)

    def auth_result(self, mode: str, result: str) -> None:
        key = (mode, result)
        counter = self._auth_children.get(key)
        if counter is None:
            counter = self._auth_children[key] = self._auth.labels(mode, result)
        counter.inc()
