"""TF Serving's gRPC API on the sidecar: `tensorflow.serving.PredictionService` (Predict,
Classify, Regress, MultiInference, GetModelMetadata) and `ModelService.GetModelStatus`, served
by grpc.aio on the aiohttp app's event loop, with the app's authenticator, router and inference
log; and gRPC's health check (`grpc_health`).

Each call is read top to bottom as the REST request path, through the same steps (`calls`):
credential (`authorization` metadata, `ApiKey <key>` or `Bearer <token>`), then the request
message, read only once the credential is good, then the model spec (the only part of the
request decoded, see `grpc_wire`), then the version (the path's choice over REST: a version
named, a label the routing knows, else the split), then TF Serving's gRPC port, the request
forwarded as bytes with the chosen version in its model spec, the caller's deadline (capped at
upstream.timeoutSeconds) passed on, and a cancelled call cancelling the forwarded one; then the
inference log and the shadow's copy. What is gRPC's own is here: metadata, messages, status codes.

What the caller gets is TF Serving's answer as its bytes, or its status as it came; the sidecar's
own refusals are TF Serving's codes for the same causes (`REFUSALS`). An answer's initial
metadata carries `x-request-id`, `traceparent` and, once a version answered, `x-model-version`;
a failure from TF Serving (or the log's UNAVAILABLE) carries the same as trailing metadata,
with its status.

MultiInference runs several tasks (classify, regress) on one input, each task with a model spec:
TF Serving finds the version by the first task's and refuses tasks that name different models;
the sidecar asks the same of them, and more: the tasks that name a version or a label must all
name the same one (TF Serving would run the first's and ignore the others'), and every task is
sent naming the version chosen.

Logged, as over REST: every authorized Predict, Classify, Regress and MultiInference once
answered, with the HTTP code of its gRPC status (`HTTP_STATUS`, the mapping TF Serving's REST
API uses for the same errors); not logged: refused credentials, a model other than the
serving's, a request the sidecar cannot parse or a MultiInference whose tasks disagree,
GetModelMetadata and GetModelStatus, a request over grpc.maxMessageBytes (refused by gRPC as
it is read), and a call the caller cancelled (no answer was given).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
from aiohttp import web
from opentelemetry.sdk.trace import Span
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from modelserving.tfserving.serving_apis_pb2 import InferenceTask, ModelSpec
from modelserving_sidecar.app import (
    AUTHENTICATOR,
    CONFIG,
    INFERENCE_LOG,
    METRICS,
    MODEL_STATE,
    READY_CACHE_SECONDS,
    ROUTER,
    SHADOW,
    SHUTTING_DOWN,
    TRACING,
)
from modelserving_sidecar.auth.authenticator import Authenticator
from modelserving_sidecar.calls import (
    LOG_CANNOT_KEEP,
    LOG_FULL,
    MODEL_VERSION,
    Call,
    authenticate,
    begin_trace,
    choose_version,
    copy_to_shadow,
    exchange_of,
    log_exchange,
    served_by,
)
from modelserving_sidecar.config import GrpcConfig, LogDurability, SidecarConfig
from modelserving_sidecar.errors import SidecarError, error_body
from modelserving_sidecar.grpc.health import HealthService
from modelserving_sidecar.grpc.wire import (
    WireError,
    read_model_spec,
    read_tasks,
    with_model_spec,
    with_tasks,
)
from modelserving_sidecar.log.exchange import InferenceLogSink
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.request_id import request_id
from modelserving_sidecar.routing.router import Router
from modelserving_sidecar.routing.shadow import ShadowCopy, ShadowSender
from modelserving_sidecar.tracing.context import TRACEPARENT, TRACESTATE
from modelserving_sidecar.tracing.spans import (
    Tracing,
    end_failed,
    rpc_server_done,
    traceparent_of_span,
)

log = logging.getLogger(__name__)

# The gRPC status of each of the sidecar's own HTTP refusals.
REFUSALS = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# The record's responseHttpCode for each gRPC status: TF Serving's own mapping of its error
# codes to HTTP (util/net_http's ToHTTPStatusCode, the codes its REST API answers with), so a
# failure logs the same code over either protocol.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
REQUEST_ID = "x-request-id"
AUTHORIZATION = "authorization"
_CONTENT_TYPE = "application/grpc"  # a gRPC call's shadow copy
_FAILED = grpc.StatusCode.INTERNAL  # the sidecar's own failure


@dataclass(frozen=True, slots=True)
class Method:
    """One method the sidecar serves: its service, name, the routing's verb, whether logged."""

    service: str
    name: str
    verb: str  # predict, classify, regress, multi_inference (logged); metadata, status
    logged: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        """The metrics' route label."""
        return f"grpc_{self.verb}"


PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
METHODS = (
    Method(PREDICTION_SERVICE, "Predict", "predict", True),
    Method(PREDICTION_SERVICE, "Classify", "classify", True),
    Method(PREDICTION_SERVICE, "Regress", "regress", True),
    Method(PREDICTION_SERVICE, "MultiInference", "multi_inference", True),
    Method(PREDICTION_SERVICE, "GetModelMetadata", "metadata", False),
    Method(MODEL_SERVICE, "GetModelStatus", "status", False),
)


def message_options(settings: GrpcConfig) -> list[tuple[str, int]]:
    """The message size limit, both ways: for the sidecar's server and its channel to TF
    Serving alike."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]


# gRPC binds with SO_REUSEPORT unless told not to: a second process on the port would share its
# callers silently instead of failing to start.
_SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


class _Refused(Exception):
    """A call the sidecar answers itself with this status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class GrpcGateway:
    """The calls' one handler (`handle`), over the app's parts."""

    def __init__(
        self,
        config: SidecarConfig,
        authenticator: Authenticator,
        router: Router,
        sink: InferenceLogSink | None,
        metrics: SidecarMetrics,
        channel: grpc.aio.Channel,
        shadow: ShadowSender,
        tracing: Tracing | None = None,
    ) -> None:
        self.model_name = config.model.name
        self.tracing = tracing
        self.timeout = config.upstream.timeout_seconds
        self.authenticator = authenticator
        self.router = router
        self.sink = sink
        self.metrics = metrics
        self.durable = config.logging.durability is LogDurability.SPOOLED
        # Identity (de)serializers: requests and answers pass as bytes.
        self.upstream: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
            m.path: channel.unary_unary(m.path) for m in METHODS
        }
        self.shadow = shadow
        shadow.grpc_send = self.send_shadow

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler[bytes, bytes]]] = {}
        for method in METHODS:
            # Client-streaming (the same on the wire as unary for one message): grpc.aio reads a
            # unary call's message before calling its handler, so a caller without a credential
            # could make the sidecar take in up to grpc.maxMessageBytes; a client-streaming
            # call's message is read when the handler asks, after the credential.
            by_service.setdefault(method.service, {})[method.name] = (
                grpc.stream_unary_rpc_method_handler(self._handler(method))
            )
        return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]

    def _handler(
        self, method: Method
    ) -> Callable[[AsyncIterable[bytes], grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        concurrency = self.metrics.concurrency  # as over REST: arrival to answer

        async def handle(
            _: AsyncIterable[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> bytes:
            concurrency.arrived()
            try:
                return await self.handle(method, context)
            finally:
                concurrency.answered()

        return handle

    async def handle(
        self, method: Method, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        started = time.perf_counter()
        metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        call = Call(request_id(metadata.get(REQUEST_ID)))
        tracing = self.tracing
        begin_trace(
            call,
            tracing,
            metadata.get(TRACEPARENT),
            metadata.get(TRACESTATE),
            method.path[1:],
            SpanKind.SERVER,
        )
        if call.span is not None:
            call.span.set_attributes(_rpc_attributes(method))
        sink = self.sink if method.logged else None  # the inference log, when it keeps the call
        try:
            authorization = metadata.get(AUTHORIZATION)
            call.caller = await authenticate(
                self.authenticator, self.metrics, authorization, tracing, call.span
            )
            call.request_body = await _received(context)
            forwarded, shadow_copy = self.route(method, call, metadata)
            if sink is not None and not sink.accepting():
                raise SidecarError(503, LOG_FULL)
        except (SidecarError, _Refused) as exc:
            code = exc.code if isinstance(exc, _Refused) else REFUSALS.get(exc.status, _FAILED)
            seconds = time.perf_counter() - started
            self.metrics.request_done(method.label, HTTP_STATUS[code], seconds)
            if call.span is not None:
                self.span_done(call, code, method, seconds)
            await context.abort(code, exc.message)
        remaining = context.time_remaining()
        timeout = self.timeout if remaining is None else min(remaining, self.timeout)
        upstream_span = None
        traceparent = call.traceparent
        if call.span is not None and tracing is not None:
            upstream_span = tracing.child(
                call.span, method.path[1:], SpanKind.CLIENT, _rpc_attributes(method)
            )
            traceparent = traceparent_of_span(upstream_span)
        passed_on = [(REQUEST_ID, call.request_id), (TRACEPARENT, traceparent)]
        if call.tracestate is not None:
            passed_on.append((TRACESTATE, call.tracestate))
        upstream_started = time.perf_counter()
        try:
            answer: bytes = await self.upstream[method.path](
                forwarded, timeout=timeout, metadata=passed_on
            )
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as exc:
            answer, code, details = b"", exc.code(), exc.details() or ""
        except Exception:  # answered and logged as a failure of the sidecar's, as over REST
            log.exception("the sidecar failed on %s", method.path)
            answer, code, details = b"", _FAILED, "The sidecar failed on this call"
        if upstream_span is not None:
            _upstream_done(upstream_span, code)
        call.served = served = served_by(call.version, code is grpc.StatusCode.OK)
        self.metrics.upstream_done(method.label, time.perf_counter() - upstream_started, served)
        status = HTTP_STATUS.get(code, 500)
        answered = [(REQUEST_ID, call.request_id), (TRACEPARENT, call.traceparent)]
        if served:
            answered.append((MODEL_VERSION, served))
        if sink is not None:
            body = answer if code is grpc.StatusCode.OK else error_body(details)
            default = self.router.table.default
            exchange = exchange_of(call, status, body, call.traceparent, default, method.name)
            waiting = log_exchange(sink, exchange, self.durable, self.tracing, call.span)
            if waiting is not None and not await waiting:  # no answer without its record
                code, details, status = grpc.StatusCode.UNAVAILABLE, LOG_CANNOT_KEEP, 503
        if shadow_copy is not None:
            copy_to_shadow(
                self.shadow,
                call,
                method.verb,
                shadow_copy,
                _CONTENT_TYPE,
                call.traceparent,
                method.name,
            )
        seconds = time.perf_counter() - started
        self.metrics.request_done(method.label, status, seconds, served)
        if call.span is not None:
            self.span_done(call, code, method, seconds)
        if code is not grpc.StatusCode.OK:
            # A failure's metadata goes with its status, in one batch (a trailers-only answer):
            # no batch of its own, and the call is not committed before its status, so that a
            # client's retry policy can retry an UNAVAILABLE.
            context.set_trailing_metadata(answered)
            await context.abort(code, details)
        # An answer's metadata is initial metadata, where clients read x-request-id and
        # x-model-version (README), sent once the answer is decided: a batch of its own, as
        # grpc.aio cannot send initial metadata with the answer (25 to 110 µs of CPU a call in
        # the benchmark, the largest single part of what the sidecar adds over a bare grpc.aio
        # proxy; docs/decisions/0005-grpc-data-plane.md).
        await context.send_initial_metadata(answered)
        return answer

    def span_done(self, call: Call, code: grpc.StatusCode, method: Method, seconds: float) -> None:
        """End a sampled call's span; its latency's bucket names its trace (the exemplar), as a
        REST call's does."""
        span = call.span
        assert span is not None
        context = span.get_span_context()
        self.metrics.latency_exemplar(
            method.label,
            seconds,
            call.served,
            format_trace_id(context.trace_id),
            format_span_id(context.span_id),
        )
        rpc_server_done(
            span,
            code.value[0],
            code.name,
            self.model_name,
            call.served,
            call.caller,
        )

    async def send_shadow(self, copy: ShadowCopy, timeout: float) -> tuple[int, bytes]:
        """A call's copy to the shadow version (`shadow` sends it): its HTTP code and answer
        (TF Serving's error body when it failed)."""
        send = self.upstream[f"/{PREDICTION_SERVICE}/{copy.grpc_method}"]
        passed_on = [(REQUEST_ID, copy.request_id)]
        if copy.traceparent:
            passed_on.append((TRACEPARENT, copy.traceparent))
        if copy.tracestate is not None:
            passed_on.append((TRACESTATE, copy.tracestate))
        try:
            answer = await send(copy.body, timeout=timeout, metadata=passed_on)
        except grpc.aio.AioRpcError as exc:
            return HTTP_STATUS.get(exc.code(), 500), error_body(exc.details() or "")
        return 200, answer

    def route(
        self, method: Method, call: Call, metadata: dict[str, str]
    ) -> tuple[bytes, bytes | None]:
        """The request to forward (the chosen version, `call.version`, put in its model spec), and
        the shadow's copy (naming the shadow's version) when the call is copied to it. A label
        the routing does not know leaves the request as it came, for TF Serving to answer."""
        request = call.request_body
        naming: Callable[[int], bytes]  # the request naming this version
        try:
            if method.verb == "multi_inference":
                tasks, spans = read_tasks(request)
                spec = _tasks_spec(tasks, self.model_name)
                naming = functools.partial(_naming_tasks, request, spans, tasks)
            else:
                spec, span = read_model_spec(request)
                naming = functools.partial(_naming, request, span, spec)
        except WireError as exc:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse the request: {exc}"
            ) from None
        if spec.name != self.model_name:
            raise _Refused(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )
        choice = spec.WhichOneof("version_choice")
        named = spec.version.value if choice == "version" else None
        label = spec.version_label if choice == "version_label" else None
        shadows = self.shadow if method.logged else None  # model queries are never copied
        call.version = version = choose_version(
            call, self.router.table, self.model_name, named, label, metadata, shadows
        )
        if version is None:
            return request, None
        if named is not None and method.verb != "multi_inference":
            return request, None  # as it came (a MultiInference's other tasks are made to name it)
        shadow = call.shadow
        return naming(version.version), naming(shadow.version) if shadow is not None else None


def _rpc_attributes(method: Method) -> dict[str, str]:
    """RPC's semantic conventions for a call of `method` (the server's span, and its call to TF
    Serving's)."""
    return {"rpc.system": "grpc", "rpc.service": method.service, "rpc.method": method.name}


def _upstream_done(span: Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is grpc.StatusCode.OK:
        span.end()
    else:
        end_failed(span, code.name)


async def _received(context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    """The call's request message, read now. None comes when the call is over already (gRPC
    refused a message over grpc.maxMessageBytes, and the caller has its RESOURCE_EXHAUSTED; or
    the caller cancelled), or when the caller closed its side sending none, which a unary
    client never does."""
    message: object = await context.read()  # bytes, or grpc.aio.EOF (left out of grpc's types)
    if not isinstance(message, bytes):
        # Aborted, so the call ends here; a caller refused or gone has its status already.
        await context.abort(grpc.StatusCode.INTERNAL, "The call carried no request message")
    return message


def _naming(request: bytes, span: tuple[int, int], spec: ModelSpec, version: int) -> bytes:
    spec.version.value = version  # clears version_label: one of the two
    return with_model_spec(request, span, spec)


def _naming_tasks(
    request: bytes, spans: list[tuple[int, int]], tasks: list[InferenceTask], version: int
) -> bytes:
    for task in tasks:
        task.model_spec.version.value = version
    return with_tasks(request, spans, tasks)


def _tasks_spec(tasks: list[InferenceTask], model_name: str) -> ModelSpec:
    """The model spec a MultiInference call is routed by: the first task's, with the version or
    label its tasks name; _Refused when they name different models (TF Serving's error) or
    different versions or labels."""
    if not tasks:
        return ModelSpec()  # no model named: NOT_FOUND, as TF Serving answers
    first = tasks[0].model_spec
    if first.name != model_name:
        return first  # NOT_FOUND: TF Serving looks the first task's model up before the rest
    named: ModelSpec | None = None
    for task in tasks:
        spec = task.model_spec
        if not spec.name:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."
            )
        if spec.name != first.name:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            )
        choice = spec.WhichOneof("version_choice")
        if choice is None:
            continue
        if named is None:
            named = spec
        elif _asked(named) != _asked(spec):
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                "All ModelSpecs in a "
                "MultiInferenceRequest must access the same model version: "
                f"{_asked(named)} and {_asked(spec)} were asked",
            )
    return first if named is None else named


def _asked(spec: ModelSpec) -> str:
    if spec.WhichOneof("version_choice") == "version":
        return f"version {spec.version.value}"
    return f"label {spec.version_label}"


@contextlib.asynccontextmanager
async def serving_grpc(
    app: web.Application, host: str, shutdown_seconds: float
) -> AsyncIterator[int | None]:
    """The gRPC port for the app's lifetime (its parts set up), on grpc.port (0: none); yields
    the port bound. On exit, calls in flight get `shutdown_seconds` to finish."""
    config = app[CONFIG]
    settings = config.grpc
    if not settings.port:
        yield None
        return
    options = message_options(settings)
    async with grpc.aio.insecure_channel(settings.upstream, options=options) as channel:
        gateway = GrpcGateway(
            config,
            app[AUTHENTICATOR],
            app[ROUTER],
            app[INFERENCE_LOG],
            app[METRICS],
            channel,
            app[SHADOW],
            app[TRACING],
        )
        health = HealthService(
            ("", PREDICTION_SERVICE),
            app[MODEL_STATE],
            app[ROUTER],
            app[METRICS],
            READY_CACHE_SECONDS,
        )
        server = grpc.aio.server(
            handlers=[*gateway.handlers(), health.handlers()], options=options + _SERVER_OPTIONS
        )
        port = server.add_insecure_port(f"{host}:{settings.port}")
        await server.start()
        log.info("gRPC: TF Serving's API on %s:%s, forwarded to %s", host, port, settings.upstream)
        # NOT_SERVING from the moment the sidecar begins to shut down (calls are still served).
        shutting_down = asyncio.create_task(_shut_down_on(app[SHUTTING_DOWN], health))
        try:
            yield port
        finally:
            shutting_down.cancel()
            health.shut_down()
            await server.stop(shutdown_seconds)


async def _shut_down_on(event: asyncio.Event, health: HealthService) -> None:
    await event.wait()
    health.shut_down()
