"""The spans of sampled calls, with OpenTelemetry's SDK, exported over OTLP/HTTP: one server span
per call (HTTP's or RPC's semantic conventions, with the model, the version that answered, the
caller and the request id), and its children, the authentication and the call to TF Serving.

Only a sampled call ever reaches the SDK (the decision is `Tracing.wants`, over the header
string): parent-based, so a caller's sampled trace is always continued and an unsampled one
never, and `tracing.ratio` of the calls that came without a trace context start one. The others
pay for no span, context or attribute.

Spans leave through a BatchSpanProcessor: a bounded queue emptied by a thread of its own, so a
collector that is down or slow never touches a call; what cannot be kept (the queue full, an
export that failed) is counted in `modelserving_sidecar_trace_spans_dropped_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from modelserving_sidecar.config import SidecarConfig
from modelserving_sidecar.tracing.context import ids_of, is_sampled, traceparent_of

log = logging.getLogger(__name__)

SERVICE_NAME = "modelserving-sidecar"
# The standard variables that name a collector when `tracing.endpoint` does not.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Spans waiting for the exporter: at 1,000 sampled calls a second (three spans each), about two
# seconds' worth; more is dropped and counted rather than held.
MAX_QUEUED_SPANS = 8192
EXPORT_INTERVAL_MS = 1000
MAX_EXPORT_BATCH = 512  # spans in one OTLP request (the SDK's default)
# A collector that does not answer holds the exporter's thread this long per batch, not a call.
EXPORT_TIMEOUT_SECONDS = 5.0
_SHUTDOWN_SECONDS = 5.0

# Our own attributes, beside the semantic conventions' (http.*, rpc.*, enduser.id).
REQUEST_ID = "modelserving.request_id"
MODEL_NAME = "modelserving.model.name"
MODEL_VERSION = "modelserving.model.version"
AUTH_MODE = "modelserving.auth.mode"
AUTH_CACHE = "modelserving.auth.cache"  # hit, or miss: the API server was asked (TokenReview)
LOG_DURABILITY = "modelserving.log.durability"  # the inference log's span: spooled


class DroppedSpans:
    """Spans that never reached the collector, by reason; each count is written by one thread
    only (the queue's by the event loop, the export's by the exporter's thread). `component`
    names the metric: the sidecar's, the activator's or the operator's."""

    def __init__(self, registry: CollectorRegistry, component: str = "sidecar") -> None:
        self.queue_full = 0
        self.export_failed = 0
        self.name = f"modelserving_{component}_trace_spans_dropped"
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            self.name,
            "Spans of sampled calls that were not exported, by reason: queue_full (the "
            "exporter's queue was full), export_failed (the collector refused them or could not "
            "be reached in time).",
            labels=["reason"],
        )
        family.add_metric(["queue_full"], self.queue_full)
        family.add_metric(["export_failed"], self.export_failed)
        yield family


# The OTLP exporter's logger: it says each retry (a warning a second) and each batch given up
# (an error every few seconds) for as long as the collector is away; CountingExporter says it
# once instead, and again when spans go through.
OTLP_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_REPEATED = ("Transient error", "Failed to export spans batch due to timeout")


def _not_repeated(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_REPEATED)


class CountingExporter(SpanExporter):
    """The OTLP exporter, with the spans of each failed export counted as dropped, and the
    collector's failing said once per change (`endpoint` names it)."""

    def __init__(self, exporter: SpanExporter, dropped: DroppedSpans, endpoint: str = "") -> None:
        self._exporter = exporter
        self._dropped = dropped
        self._endpoint = endpoint or "the OTEL_EXPORTER_OTLP_* variables' collector"
        self._failing = False
        logging.getLogger(OTLP_EXPORTER_LOGGER).addFilter(_not_repeated)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._dropped.export_failed += len(spans)
            if not self._failing:
                self._failing = True
                log.warning(
                    "traces: the collector at %s does not take the spans (down, or refusing "
                    "them); they are dropped and counted in "
                    '%s_total{reason="export_failed"}; calls are not affected',
                    self._endpoint,
                    self._dropped.name,
                )
        elif self._failing:
            self._failing = False
            log.info("traces: the collector at %s takes the spans again", self._endpoint)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class BoundedSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor that drops a span itself when its queue is full, and counts it: the
    SDK's own would log a warning for each (on the event loop) and drop the oldest."""

    def __init__(self, exporter: SpanExporter, dropped: DroppedSpans, max_queued: int) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queued,
            schedule_delay_millis=EXPORT_INTERVAL_MS,
            max_export_batch_size=min(MAX_EXPORT_BATCH, max_queued),
            export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000,
        )
        self._dropped = dropped
        self._max_queued = max_queued
        # The SDK's deque (opentelemetry-sdk's minor release is pinned for this; a unit test
        # fills the queue to check it).
        self._queue = self._batch_processor._queue

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self._max_queued:
            self._dropped.queue_full += 1
            return
        super().on_end(span)


class Tracing:
    """The sampling decision and the spans of sampled calls."""

    def __init__(
        self,
        provider: TracerProvider,
        ratio: float,
        dropped: DroppedSpans,
        scope: str = "modelserving_sidecar",
    ) -> None:
        self.provider = provider
        self.ratio = ratio
        self.dropped = dropped
        self._tracer = provider.get_tracer(scope)
        self._random = random.random

    def wants(self, parent: str | None) -> bool:
        """Whether a call with this (valid) traceparent, or None, gets spans: parent-based, else
        `ratio` of the calls."""
        if parent is not None:
            return is_sampled(parent)
        return self.ratio > 0 and self._random() < self.ratio

    def server_span(
        self,
        name: str,
        kind: SpanKind,
        parent: str | None,
        tracestate: str | None,
        attributes: dict[str, Any],
    ) -> Span:
        """The call's span, the caller's child when it sent a trace context, else a new trace."""
        context = None
        if parent is not None:
            trace_id, span_id, flags = ids_of(parent)
            state = TraceState.from_header([tracestate]) if tracestate else None
            remote = SpanContext(trace_id, span_id, True, TraceFlags(flags), state)
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context, kind, attributes)
        return span  # type: ignore[return-value]

    def child(
        self, parent: Span, name: str, kind: SpanKind, attributes: dict[str, Any] | None = None
    ) -> Span:
        context = trace.set_span_in_context(parent)
        return self._tracer.start_span(name, context, kind, attributes)  # type: ignore[return-value]

    @classmethod
    def running(
        cls,
        config: SidecarConfig,
        registry: CollectorRegistry,
        max_queued: int = MAX_QUEUED_SPANS,
    ) -> contextlib.AbstractAsyncContextManager[Tracing | None]:
        """The sidecar's tracing for the app's lifetime (`exporting`), to its spec's
        collector at its ratio."""
        resource = {
            "service.name": SERVICE_NAME,
            "service.namespace": config.serving.namespace,
            "modelserving.serving": config.serving.name,
        }
        return cls.exporting(
            config.tracing.endpoint, config.tracing.ratio, registry, resource, "sidecar", max_queued
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def exporting(
        cls,
        endpoint: str,
        ratio: float,
        registry: CollectorRegistry,
        resource: dict[str, Any],
        component: str,
        max_queued: int = MAX_QUEUED_SPANS,
    ) -> AsyncIterator[Tracing | None]:
        """Tracing while open, or None when no collector is named (`endpoint`, else the
        standard variables; then calls carry their trace context and nothing more). Spans
        still queued are sent at the end, for `_SHUTDOWN_SECONDS` at most. `resource` says
        whose spans they are; `component` (sidecar, activator, operator) names the dropped
        spans' metric and the tracer's scope."""
        if not endpoint and not any(os.environ.get(v) for v in ENDPOINT_VARIABLES):
            yield None
            return
        # Imported here: the exporter loads protobuf, which a sidecar that traces nothing (or has
        # no gRPC port) does without.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        dropped = DroppedSpans(registry, component)
        exporter = OTLPSpanExporter(endpoint=endpoint or None, timeout=EXPORT_TIMEOUT_SECONDS)
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here, over these.
        # Every span the SDK is asked for is wanted: the decision was made before (`wants`).
        provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.create(resource))
        provider.add_span_processor(
            BoundedSpanProcessor(CountingExporter(exporter, dropped, endpoint), dropped, max_queued)
        )
        try:
            yield cls(provider, ratio, dropped, f"modelserving_{component}")
        finally:
            await asyncio.to_thread(_shut_down, provider)


def _shut_down(provider: TracerProvider) -> None:
    started = time.monotonic()
    provider.force_flush(int(_SHUTDOWN_SECONDS * 1000))
    if time.monotonic() - started < _SHUTDOWN_SECONDS:
        provider.shutdown()


def traceparent_of_span(span: Span) -> str:
    """The traceparent that names `span` (a sampled one)."""
    context = span.get_span_context()
    return traceparent_of(context.trace_id, context.span_id, True)


def end_failed(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))
    span.end()


def http_server_done(
    span: Span,
    status: int,
    route: str,
    model: str,
    version: str,
    caller: str | None,
) -> None:
    """End a REST call's server span: HTTP's conventions (5xx is the server's error) and ours."""
    if route:  # none for a path the sidecar does not serve: the name is the method alone
        span.update_name(f"{span.attributes['http.request.method']} {route}")  # type: ignore[index]
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    _call_done(span, model, version, caller)
    if status >= 500:
        end_failed(span, str(status))
    else:
        span.end()


def rpc_server_done(
    span: Span, code: int, code_name: str, model: str, version: str, caller: str | None
) -> None:
    """End a gRPC call's server span: RPC's conventions (every status but OK is an error)."""
    span.set_attribute("rpc.grpc.status_code", code)
    _call_done(span, model, version, caller)
    if code != 0:
        end_failed(span, code_name)
    else:
        span.end()


def _call_done(span: Span, model: str, version: str, caller: str | None) -> None:
    span.set_attribute(MODEL_NAME, model)
    if version:
        span.set_attribute(MODEL_VERSION, version)
    if caller is not None:
        span.set_attribute("enduser.id", caller)
