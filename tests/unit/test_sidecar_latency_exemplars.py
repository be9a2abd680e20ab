"""A sampled call's trace as the exemplar of the latency bucket it fell in, in the OpenMetrics
exposition a scrape asks for (the Prometheus text format has no exemplars); a call that is not
sampled marks nothing."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from modelserving_sidecar.metrics import SidecarMetrics

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def latency_buckets(registry: CollectorRegistry) -> dict[tuple[str, str], object]:
    """The request latency's bucket samples by (route, le), from the OpenMetrics exposition."""
    text = openmetrics_latest(registry).decode()
    (family,) = [
        f
        for f in text_string_to_metric_families(text)
        if f.name == "modelserving_sidecar_request_duration_seconds"
    ]
    return {
        (s.labels["route"], s.labels["le"]): s for s in family.samples if s.name.endswith("_bucket")
    }


def test_a_sampled_call_marks_its_latency_bucket_with_its_trace():
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    metrics.request_done("predict", 200, 0.0007, "1")
    metrics.request_done("predict", 200, 0.0007, "1")
    metrics.latency_exemplar("predict", 0.0007, "1", TRACE_ID, SPAN_ID)
    metrics.request_done("classify", 200, 0.0007, "1")  # not sampled

    buckets = latency_buckets(registry)
    marked = buckets[("predict", "0.001")]
    assert marked.value == 2
    assert marked.exemplar.labels == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert marked.exemplar.value == 0.0007
    # Only the bucket it fell in, and nothing for the call that was not sampled.
    assert [key for key, s in buckets.items() if s.exemplar is not None] == [("predict", "0.001")]
    # The text format Prometheus reads when it does not ask for OpenMetrics: no exemplar.
    text = generate_latest(registry).decode()
    assert TRACE_ID not in text
    assert 'modelserving_sidecar_request_duration_seconds_bucket{le="0.001",route="predict"' in text


def test_the_latest_sampled_call_of_a_bucket_is_its_exemplar():
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    for span_id in (SPAN_ID, "00f067aa0ba902b8"):
        metrics.request_done("predict", 200, 0.3, "1")
        metrics.latency_exemplar("predict", 0.3, "1", TRACE_ID, span_id)
    marked = latency_buckets(registry)[("predict", "0.5")]
    assert marked.exemplar.labels["span_id"] == "00f067aa0ba902b8"
