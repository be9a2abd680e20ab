"""The counts the sidecar publishes for the operator: for status.versions' servedPercent every
inference call, over REST and over gRPC, by the version that answered (probes and model queries
not); for the concurrency autoscaler the requests in flight, integrated over time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from modelserving_sidecar.metrics import Concurrency, SidecarMetrics


def test_served_counts_take_rest_and_grpc_calls_by_version() -> None:
    metrics = SidecarMetrics(CollectorRegistry())
    for route, version in [
        ("predict", "3"),
        ("predict", "3"),
        ("classify", "4"),
        ("grpc_predict", "3"),
        ("grpc_regress", "4"),
        ("grpc_multi_inference", "4"),
        ("grpc_status", "3"),
        ("metadata", "3"),
        ("readyz", ""),
        ("predict", ""),
    ]:
        metrics.request_done(route, 200, 0.001, version)

    assert metrics.served_by_version() == {3: 3, 4: 3}


def test_concurrency_is_requests_in_flight_integrated_over_time():
    now = [0.0]
    concurrency = Concurrency(CollectorRegistry(), clock=lambda: now[0])
    for at, step in ((0.0, "arrived"), (1.0, "arrived"), (3.0, "answered"), (4.0, "answered")):
        now[0] = at
        getattr(concurrency, step)()
    # 1 request for 1 s, 2 for 2 s, 1 for 1 s.
    assert (concurrency.in_flight, concurrency.request_seconds()) == (0, 6.0)
    now[0] = 5.0
    concurrency.arrived()
    now[0] = 5.5
    assert concurrency.request_seconds() == 6.5  # the one still held counts up to now
