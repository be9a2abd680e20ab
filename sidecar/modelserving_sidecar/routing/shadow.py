"""The shadow version: a copy of a share of the requests the split serves (a path that names a
version or a label is not copied; the share is chosen by a hash of the request id), sent to it
once the caller's answer is decided, by a few workers of its own, so that it never adds latency
or an error for the caller.

Calls over REST and gRPC share the queue and the workers; each copy goes to TF Serving by the
protocol its call came in by. Bounded twice: at most `shadow.maxConcurrency` copies are with TF
Serving at once, and at most `shadow.queueSize` wait; a copy that finds the queue full, or the
shadow version not AVAILABLE, is dropped and counted (`modelserving_sidecar_shadow_dropped_total`).
Each answer (TF Serving's, or the sidecar's own error when TF Serving did not answer) goes to the
inference log as a record of its own: the same key (the request id) as the main record, the
shadow's modelVersion, and role `shadow`.

The copy of a sampled call is sent in a span of its own, `shadow copy`, a child of the call's
server span (which has ended by then: the copy leaves after the answer), whose context TF Serving
gets; the record keeps the call's context, as the main record does. The copy of a call that is
not sampled carries no span, and costs its worker one check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from opentelemetry.sdk.trace import Span
from opentelemetry.trace import SpanKind

from modelserving_sidecar.config import ShadowConfig
from modelserving_sidecar.errors import SidecarError, error_body
from modelserving_sidecar.log.exchange import Exchange, InferenceLogSink
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.routing.split import SHADOW, VersionRoute
from modelserving_sidecar.tracing.spans import (
    MODEL_VERSION,
    REQUEST_ID,
    Tracing,
    end_failed,
    traceparent_of_span,
)
from modelserving_sidecar.upstream.proxy import Upstream

SHADOW_SPAN = "shadow copy"
_GRPC_SERVICE = "tensorflow.serving.PredictionService"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowCopy:
    """What the shadow is sent of one request, and what its record keeps of it."""

    request_id: str
    received_ms: int
    verb: str  # predict, classify, regress
    body: bytes
    content_type: str
    caller: str | None
    traceparent: str | None
    version: VersionRoute
    # A gRPC call's copy: its method (the body is its request, naming the shadow's version).
    grpc_method: str | None = None
    tracestate: str | None = None  # the caller's, passed on with the traceparent
    span: Span | None = None  # the call's server span, when it is sampled


# Sends a gRPC call's copy to TF Serving within a timeout: its (HTTP code, answer).
GrpcSend = Callable[["ShadowCopy", float], Awaitable[tuple[int, bytes]]]


class ShadowSender:
    """The queue of copies and the workers that send them."""

    def __init__(
        self,
        upstream: Upstream,
        sink: InferenceLogSink | None,
        settings: ShadowConfig,
        metrics: SidecarMetrics,
        tracing: Tracing | None = None,
    ) -> None:
        self._upstream = upstream
        self._sink = sink
        self._settings = settings
        self._metrics = metrics
        self._tracing = tracing
        self._queue: asyncio.Queue[ShadowCopy] = asyncio.Queue(settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self.grpc_send: GrpcSend | None = None  # set by the gRPC port, when there is one

    def send(self, copy: ShadowCopy) -> None:
        """Queue a copy; never blocks, never raises (a full queue drops it, counted)."""
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            self._metrics.shadow_dropped("queue_full")

    def skip(self) -> None:
        """A copy not made: the shadow version is not AVAILABLE."""
        self._metrics.shadow_dropped("unavailable")

    async def _work(self) -> None:
        while True:
            copy = await self._queue.get()
            try:
                await self._send(copy)
            except asyncio.CancelledError:
                raise
            except Exception:  # a worker outlives anything one copy can do
                log.exception("shadow: sending a copy of %s failed", copy.request_id)

    async def _send(self, copy: ShadowCopy) -> None:
        if copy.span is not None and self._tracing is not None:
            status, body = await self._answer_traced(copy, self._tracing, copy.span)
        else:
            status, body = await self._answer(copy)
        self._record(copy, status, body)

    async def _answer(self, copy: ShadowCopy) -> tuple[int, bytes]:
        """The shadow's answer to the copy, sent with the copy's trace context: its HTTP code
        and body (the sidecar's error body when TF Serving did not answer)."""
        if copy.grpc_method is not None and self.grpc_send is not None:
            return await self.grpc_send(copy, self._settings.timeout_seconds)
        try:
            answer = await self._upstream.forward(
                "POST",
                copy.version.paths[copy.verb],
                copy.body,
                content_type=copy.content_type,
                request_id=copy.request_id,
                timeout=self._settings.timeout_seconds,
                traceparent=copy.traceparent,
                tracestate=copy.tracestate,
            )
        except SidecarError as exc:
            return exc.status, error_body(exc.message)
        return answer.status, answer.body

    async def _answer_traced(
        self, copy: ShadowCopy, tracing: Tracing, parent: Span
    ) -> tuple[int, bytes]:
        """`_answer` in the span `shadow copy` (a client span, HTTP's or RPC's attributes by
        the copy's protocol), whose context TF Serving gets in place of the call's."""
        version = copy.version
        attributes = {REQUEST_ID: copy.request_id, MODEL_VERSION: version.header}
        if copy.grpc_method is not None and self.grpc_send is not None:
            attributes |= {
                "rpc.system": "grpc",
                "rpc.service": _GRPC_SERVICE,
                "rpc.method": copy.grpc_method,
            }
        else:
            attributes |= {"http.request.method": "POST", "url.path": version.paths[copy.verb]}
        span = tracing.child(parent, SHADOW_SPAN, SpanKind.CLIENT, attributes)
        sent = dataclasses.replace(copy, traceparent=traceparent_of_span(span))
        status, body = await self._answer(sent)
        if copy.grpc_method is None or self.grpc_send is None:
            span.set_attribute("http.response.status_code", status)
        if status >= 400:
            end_failed(span, str(status))
        else:
            span.end()
        return status, body

    def _record(self, copy: ShadowCopy, status: int, body: bytes) -> None:
        version = copy.version
        self._metrics.shadow_done(status, version.header)
        if self._sink is not None:
            self._sink.submit(
                Exchange(
                    request_id=copy.request_id,
                    received_ms=copy.received_ms,
                    status=status,
                    request_body=copy.body,
                    response_body=body,
                    model_version=version.version,
                    caller=copy.caller,
                    traceparent=copy.traceparent,
                    role=SHADOW,
                    grpc_method=copy.grpc_method,
                    tracestate=copy.tracestate,
                )
            )

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        upstream: Upstream,
        sink: InferenceLogSink | None,
        settings: ShadowConfig,
        metrics: SidecarMetrics,
        tracing: Tracing | None = None,
    ) -> AsyncIterator[ShadowSender]:
        """The workers for the app's lifetime; what still waits at the end is dropped, counted."""
        sender = cls(upstream, sink, settings, metrics, tracing)
        sender._workers = [
            asyncio.create_task(sender._work(), name=f"shadow-{i}")
            for i in range(settings.max_concurrency)
        ]
        try:
            yield sender
        finally:
            for worker in sender._workers:
                worker.cancel()
            await asyncio.gather(*sender._workers, return_exceptions=True)
            left = sender._queue.qsize()
            if left:
                metrics.shadow_dropped("shutdown", left)
