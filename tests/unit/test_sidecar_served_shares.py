"""The counts the sidecar publishes for status.versions' servedPercent: every inference call,
over REST and over gRPC, by the version that answered; probes and model queries not."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from modelserving_sidecar.metrics import SidecarMetrics


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
