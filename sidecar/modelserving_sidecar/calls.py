"""One call to the model, whichever way it came: the steps REST's request path (`app.RequestPath`)
and gRPC's gateway (`grpc.gateway.GrpcGateway`) both take, written once. Each framing reads its
wire format (an aiohttp request, a grpc.aio call and its protobuf) into what these steps ask for,
and writes what they decide back in its own (an HTTP answer, a gRPC status); nothing here knows
either. Read top to bottom, as both framings call them:

0. `begin_trace`: the call's W3C trace context (the caller's, or a new one), and its server span
   when it is sampled (`modelserving_sidecar.tracing`).
1. `authenticate`: the caller the credential names, or the refusal (401, 403, 503); counted by
   the authenticator's mode either way.
2. `choose_version`: the version the call names (a version, a label the routing knows), else the
   split's; and whether a copy goes to the shadow.
3. (the framing forwards the call to TF Serving, in its own protocol)
4. `served_by`: the version the call is counted under once TF Serving answered, or did not.
5. `exchange_of`: what the inference log keeps of the answered call, and `log_exchange`: it is
   submitted, or with `durability: spooled` its spool write awaited (a child span of a sampled
   call), the framing answering `LOG_CANNOT_KEEP` when it cannot be kept: an await only there,
   so the buffered answer pays for none.
6. `copy_to_shadow`: the call's copy queued for the shadow version, once the answer is decided.

The hot path of both protocols: plain functions over a slots `Call`, no closures, each step one
call that replaces the framing's own code of before.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping

from opentelemetry.sdk.trace import Span
from opentelemetry.trace import SpanKind

from modelserving_sidecar.auth.authenticator import Authenticator
from modelserving_sidecar.errors import SidecarError
from modelserving_sidecar.log.exchange import Exchange, InferenceLogSink
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.routing.shadow import ShadowCopy, ShadowSender
from modelserving_sidecar.routing.split import SplitTable, VersionRoute, bucket_of, shadow_point
from modelserving_sidecar.tracing.context import continued, passed_on_state, started
from modelserving_sidecar.tracing.spans import (
    AUTH_CACHE,
    AUTH_MODE,
    LOG_DURABILITY,
    REQUEST_ID,
    Tracing,
    end_failed,
    traceparent_of_span,
)

# The answer's header (REST) or initial metadata (gRPC): the version that answered.
MODEL_VERSION = "x-model-version"
LOG_FULL = "The inference log is full; try again later"  # 503, UNAVAILABLE: nothing was asked
LOG_CANNOT_KEEP = "The inference log cannot keep this request; try again later"  # durable: 503
# The auth results counted (modelserving_sidecar_auth_results_total) for the refusals' codes.
_AUTH_RESULTS = {401: "unauthenticated", 403: "forbidden"}


class Call:
    """One call's state as it goes down the steps."""

    __slots__ = (
        "caller",
        "received_ms",
        "request_body",
        "request_id",
        "served",
        "shadow",
        "span",
        "to_log",
        "traceparent",
        "tracestate",
        "version",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.received_ms = time.time_ns() // 1_000_000
        self.caller: str | None = None
        self.request_body = b""
        # Whether the inference log keeps this call: REST decides it on the way (a refused
        # credential, an unknown path or a full log is not kept); gRPC by its method.
        self.to_log = False
        self.version: VersionRoute | None = None  # the version the call went to
        self.served = ""  # the metrics' version label: the version that answered or failed to
        self.shadow: VersionRoute | None = None  # a copy goes to this version once answered
        # The call's trace context (begin_trace): sent on to TF Serving, put on the answer, kept
        # in the record and the shadow's copy; the server span only when the call is sampled.
        self.traceparent = ""
        self.tracestate: str | None = None
        self.span: Span | None = None


def begin_trace(
    call: Call,
    tracing: Tracing | None,
    traceparent: str | None,
    tracestate: str | None,
    name: str,
    kind: SpanKind,
) -> None:
    """The call's trace context from the caller's headers (or metadata): theirs when valid, passed
    on unchanged when not sampled; a new one when absent or invalid (never a refusal). A sampled
    call gets its server span (`name`, `kind`, the request id; the framing adds its protocol's
    attributes), whose id its trace context then carries."""
    parent = continued(traceparent)
    state = passed_on_state(tracestate) if parent is not None and tracestate else None
    if tracing is not None and tracing.wants(parent):
        attributes = {REQUEST_ID: call.request_id}
        call.span = span = tracing.server_span(name, kind, parent, state, attributes)
        call.traceparent = traceparent_of_span(span)
    else:
        call.traceparent = parent if parent is not None else started()
    call.tracestate = state


async def authenticate(
    authenticator: Authenticator,
    metrics: SidecarMetrics,
    authorization: str | None,
    tracing: Tracing | None = None,
    span: Span | None = None,
) -> str | None:
    """The caller the credential (`Authorization`'s value, over either protocol) names, None when
    auth is off; SidecarError when refused. Counted by the authenticator's mode either way; a
    child of the call's `span` when it is sampled."""
    if span is not None and tracing is not None:
        return await _authenticate_traced(authenticator, metrics, authorization, tracing, span)
    try:
        caller = await authenticator.authenticate(authorization)
    except SidecarError as exc:
        metrics.auth_result(authenticator.mode, _AUTH_RESULTS.get(exc.status, "error"))
        raise
    metrics.auth_result(authenticator.mode, "allowed")
    return caller


async def _authenticate_traced(
    authenticator: Authenticator,
    metrics: SidecarMetrics,
    authorization: str | None,
    tracing: Tracing,
    parent: Span,
) -> str | None:
    """`authenticate` in a span of its own, saying whether the API server was asked (a
    TokenReview: the Kubernetes authenticator counts its `api_calls`)."""
    span = tracing.child(parent, "authenticate", SpanKind.INTERNAL, {AUTH_MODE: authenticator.mode})
    asked_before = getattr(authenticator, "api_calls", None)
    try:
        caller = await authenticate(authenticator, metrics, authorization)
    except SidecarError as exc:
        _auth_cache(span, authenticator, asked_before)
        end_failed(span, _AUTH_RESULTS.get(exc.status, str(exc.status)))
        raise
    _auth_cache(span, authenticator, asked_before)
    span.end()
    return caller


def _auth_cache(span: Span, authenticator: Authenticator, asked_before: int | None) -> None:
    if asked_before is not None:
        asked = getattr(authenticator, "api_calls", asked_before) != asked_before
        span.set_attribute(AUTH_CACHE, "miss" if asked else "hit")


def choose_version(
    call: Call,
    table: SplitTable,
    model_name: str,
    named: int | None,
    label: str | None,
    headers: Mapping[str, str],
    shadows: ShadowSender | None,
) -> VersionRoute | None:
    """The version the call goes to: the version it names (`named`), else the one its label
    names (None: a label the routing does not know, and the call goes to TF Serving as it came),
    else the split's choice by the sticky key (`headers`: the call's headers or metadata, looked
    up in lower case). Only a call the split serves is copied to the shadow (`call.shadow`), and
    only when `shadows` is given (None: a call never copied, such as a model query)."""
    if named is not None:
        return table.version(model_name, named)
    if label is not None:
        return table.by_label.get(label)
    shadow = table.shadow
    if (
        shadow is not None
        and shadows is not None
        and shadow_point(call.request_id) < table.shadow_percent
    ):
        if shadow.version in table.available:
            call.shadow = shadow
        else:
            shadows.skip()
    only = table.only
    if only is not None:
        return only
    key = None
    if table.sticky_header is not None:
        key = headers.get(table.sticky_header)
    elif table.sticky_caller:
        key = call.caller
    return table.buckets[bucket_of(key or call.request_id)]


def served_by(version: VersionRoute | None, answered: bool) -> str:
    """The metrics' version label of a call that went to `version`: a version the routing knows
    counts every call it was sent, answered (`answered`: TF Serving's 200, gRPC's OK) or not; a
    version named by the path alone counts only what it answered."""
    if version is not None and (version.known or answered):
        return version.header
    return ""


def exchange_of(
    call: Call,
    status: int,
    response_body: bytes,
    traceparent: str | None,
    default: VersionRoute,
    grpc_method: str | None = None,
) -> Exchange:
    """What the inference log keeps of an answered call: the answer's HTTP code and body as the
    caller got them, under the version the call went to, or `default` (the split table's first
    weighted version) when it went to none (the sidecar answered it itself)."""
    version = call.version or default
    return Exchange(
        request_id=call.request_id,
        received_ms=call.received_ms,
        status=status,
        request_body=call.request_body,
        response_body=response_body,
        model_version=version.version,
        caller=call.caller,
        traceparent=traceparent,
        role=version.role,
        grpc_method=grpc_method,
        tracestate=call.tracestate,
    )


def log_exchange(
    sink: InferenceLogSink,
    exchange: Exchange,
    durable: bool,
    tracing: Tracing | None = None,
    span: Span | None = None,
) -> Awaitable[bool] | None:
    """Hand the call's record to the log: submitted (buffered: None, nothing to wait for), or
    its spool write to await (`durability: spooled`), False when it cannot be kept, so that the
    call is answered `LOG_CANNOT_KEEP`. The log's own future, not a coroutine: an unsampled
    call's wait costs no frame of its own; a sampled call's is a child span, `inference log`."""
    if not durable:
        sink.submit(exchange)
        return None
    if span is None or tracing is None:
        return sink.spooled(exchange)
    return _spooled_in_span(sink, exchange, tracing, span)


async def _spooled_in_span(
    sink: InferenceLogSink, exchange: Exchange, tracing: Tracing, span: Span
) -> bool:
    child = tracing.child(span, "inference log", SpanKind.INTERNAL, {LOG_DURABILITY: "spooled"})
    kept = await sink.spooled(exchange)
    if kept:
        child.end()
    else:
        end_failed(child, "log_cannot_keep")
    return kept


def copy_to_shadow(
    shadows: ShadowSender,
    call: Call,
    verb: str,
    body: bytes,
    content_type: str,
    traceparent: str | None,
    grpc_method: str | None = None,
) -> None:
    """The caller's answer is decided: the call's copy (`body`, naming the shadow's version over
    gRPC) goes to the shadow's queue, never blocking, never failing the call; a sampled call's
    copy is sent in a child span of its own (`routing.shadow`)."""
    shadows.send(
        ShadowCopy(
            request_id=call.request_id,
            received_ms=call.received_ms,
            verb=verb,
            body=body,
            content_type=content_type,
            caller=call.caller,
            traceparent=traceparent,
            version=call.shadow,  # type: ignore[arg-type]
            grpc_method=grpc_method,
            tracestate=call.tracestate,
            span=call.span,
        )
    )
