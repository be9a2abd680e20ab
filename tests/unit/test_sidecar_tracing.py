"""The spans of sampled calls: which calls get them (parent-based, then the ratio), and what a
collector that is slow or down costs (spans dropped and counted, never a call's time)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, generate_latest

from modelserving_sidecar.config import parse_config
from modelserving_sidecar.tracing.spans import (
    ENDPOINT_VARIABLES,
    BoundedSpanProcessor,
    CountingExporter,
    DroppedSpans,
    Tracing,
)
from tests.support.sidecar_configs import sidecar_config

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = SAMPLED[:-2] + "00"


class Recording(SpanExporter):
    """Keeps what it is given; `result` says how each export went."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.spans: list[ReadableSpan] = []
        self.result = result
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        self.exported.set()
        return self.result


def dropped_samples(registry: CollectorRegistry) -> dict[str, float]:
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("modelserving_sidecar_trace_spans_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            samples[reason] = float(line.split()[-1])
    return samples


class Stuck(Recording):
    """A collector that does not answer until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return super().export(spans)


def test_a_full_queue_drops_the_new_spans_and_counts_them():
    registry = CollectorRegistry()
    dropped = DroppedSpans(registry)
    exporter = Stuck()
    provider = TracerProvider()
    provider.add_span_processor(BoundedSpanProcessor(exporter, dropped, max_queued=4))
    tracer = provider.get_tracer("test")
    # The exporter's thread takes at most one batch of four and hangs on it; four more wait.
    for i in range(10):
        tracer.start_span(f"span {i}").end()
    assert dropped_samples(registry)["queue_full"] >= 2
    exporter.release.set()
    provider.shutdown()
    # Every span is either exported or counted: none is lost silently.
    assert len(exporter.spans) + dropped_samples(registry)["queue_full"] == 10
    assert dropped_samples(registry)["export_failed"] == 0


def test_spans_a_collector_refused_are_counted_as_dropped():
    registry = CollectorRegistry()
    dropped = DroppedSpans(registry)
    provider = TracerProvider()
    failing = Recording(SpanExportResult.FAILURE)
    provider.add_span_processor(
        BoundedSpanProcessor(CountingExporter(failing, dropped), dropped, max_queued=16)
    )
    tracer = provider.get_tracer("test")
    for i in range(3):
        tracer.start_span(f"span {i}").end()
    provider.shutdown()  # exports what is queued
    assert failing.exported.is_set()
    assert dropped_samples(registry) == {"queue_full": 0, "export_failed": 3}


class Raising(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("the collector is gone")


def test_an_exporter_that_raises_is_counted_too():
    dropped = DroppedSpans(CollectorRegistry())
    assert CountingExporter(Raising(), dropped).export([]) is SpanExportResult.FAILURE
    assert dropped.export_failed == 0  # no spans, none lost


@pytest.fixture
def no_otel_endpoint(monkeypatch):
    for variable in ENDPOINT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


async def test_without_a_collector_there_is_no_tracing(no_otel_endpoint):
    config = parse_config(sidecar_config("http://127.0.0.1:1"))
    async with Tracing.running(config, CollectorRegistry()) as tracing:
        assert tracing is None


async def test_the_standard_variable_names_a_collector(no_otel_endpoint, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    config = parse_config(sidecar_config("http://127.0.0.1:1"))
    async with Tracing.running(config, CollectorRegistry()) as tracing:
        assert tracing is not None


@pytest.mark.parametrize(
    ("ratio", "parent", "wanted"),
    [
        (0.0, SAMPLED, True),  # a caller's sampled trace is always continued
        (0.0, NOT_SAMPLED, False),
        (1.0, NOT_SAMPLED, False),  # parent-based: the caller said no
        (0.0, None, False),  # the default: start none of our own
        (1.0, None, True),
    ],
)
async def test_sampling_follows_the_caller_then_the_ratio(no_otel_endpoint, ratio, parent, wanted):
    config = parse_config(
        sidecar_config(
            "http://127.0.0.1:1", tracing={"endpoint": "http://127.0.0.1:1", "ratio": ratio}
        )
    )
    async with Tracing.running(config, CollectorRegistry()) as tracing:
        assert tracing is not None
        assert tracing.wants(parent) is wanted


async def test_a_ratio_starts_about_that_share_of_traces(no_otel_endpoint):
    config = parse_config(
        sidecar_config("http://127.0.0.1:1", tracing={"endpoint": "x", "ratio": 0.25})
    )
    async with Tracing.running(config, CollectorRegistry()) as tracing:
        assert tracing is not None
        started = sum(tracing.wants(None) for _ in range(4000))
    assert 800 < started < 1200


def test_the_ratio_is_a_share():
    with pytest.raises(ValueError, match=r"tracing\.ratio"):
        parse_config(sidecar_config("http://127.0.0.1:1", tracing={"ratio": 2}))
