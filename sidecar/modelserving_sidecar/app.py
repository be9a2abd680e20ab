"""The sidecar's aiohttp app: the request path (`RequestPath`), read top to bottom, is canonical
path and route, then the steps every call takes over either protocol (`calls`: the credential,
the version that answers, then the proxy to TF Serving, the inference log, the shadow's copy)
with REST's own parts between them (paths, HTTP methods, bodies and answers); `create_app`
wires it with the parts it needs, `SidecarRunner` serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from aiohttp import HttpVersion11, hdrs, web
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from modelserving.kube_access import NoApiServer, from_environment
from modelserving.library_internals import DirectAppRunner
from modelserving_sidecar.auth.api_keys import ApiKeyAuthenticator
from modelserving_sidecar.auth.authenticator import (
    READY,
    Authenticator,
    AuthHealth,
    UnusableAuthenticator,
)
from modelserving_sidecar.auth.kubernetes_tokens import KubernetesAuthenticator
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
from modelserving_sidecar.config import AuthMode, LogDurability, LoggingMode, SidecarConfig
from modelserving_sidecar.errors import JSON, SidecarError, error_response
from modelserving_sidecar.log.exchange import InferenceLogSink
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.model.report import publishing_model_report
from modelserving_sidecar.model.state import WATCHED_AGE_SECONDS, ModelStateWatcher
from modelserving_sidecar.request_id import HEADER as REQUEST_ID
from modelserving_sidecar.request_id import request_id
from modelserving_sidecar.routing.paths import Route, RouteKind, RouteTable, canonical_path
from modelserving_sidecar.routing.router import Router
from modelserving_sidecar.routing.shadow import ShadowSender
from modelserving_sidecar.tracing.context import TRACEPARENT, TRACESTATE
from modelserving_sidecar.tracing.spans import (
    Tracing,
    end_failed,
    http_server_done,
    traceparent_of_span,
)
from modelserving_sidecar.upstream.proxy import Upstream, UpstreamAnswer, read_body

log = logging.getLogger(__name__)

SinkFactory = Callable[
    [SidecarConfig, CollectorRegistry], AbstractAsyncContextManager[InferenceLogSink]
]

CONFIG = web.AppKey("config", SidecarConfig)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", SidecarMetrics)
ROUTES = web.AppKey("routes", RouteTable)
UPSTREAM = web.AppKey("upstream", Upstream)
MODEL_STATE = web.AppKey("model_state", ModelStateWatcher)
ROUTER = web.AppKey("router", Router)
SHADOW = web.AppKey("shadow", ShadowSender)
ROUTING_FILE: web.AppKey[Path | None] = web.AppKey("routing_file")
# Set on SIGTERM: readiness fails (REST's /readyz, gRPC's health) while requests are still served.
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
INFERENCE_LOG: web.AppKey[InferenceLogSink | None] = web.AppKey("inference_log")
TRACING: web.AppKey[Tracing | None] = web.AppKey("tracing")  # None: no collector, no spans
REQUEST_PATH: web.AppKey[RequestPath] = web.AppKey("request_path")

_REFUSED = Route(RouteKind.NOT_FOUND, "refused", frozenset())
_ALIVE = b'{"status": "alive"}'
_READY = b'{"status": "ready"}'
_NOT_READY = b'{"error": "The model is not AVAILABLE in TF Serving yet"}'
_STOPPING = b'{"error": "The sidecar is shutting down"}'
OPENMETRICS = "application/openmetrics-text"  # a scrape's Accept asking for OpenMetrics
# Readiness probes come often; TF Serving is asked again when its last look is older than this.
READY_CACHE_SECONDS = 1.0

# A route's handler: the request, the call's state, and the route its path resolved to.
Handler = Callable[[web.BaseRequest, Call, Route], Awaitable[web.StreamResponse]]


class RequestPath:
    """The sidecar's one request handler: every request goes through `__call__`, top to bottom.

    Served by `SidecarRunner` as aiohttp's low-level server handler (no router, no middleware
    chain: each cost more than the sidecar's own work); aiohttp still parses the HTTP.
    """

    def __init__(self, app: web.Application) -> None:
        self.config = app[CONFIG]
        self.registry = app[REGISTRY]
        self.metrics = app[METRICS]
        self.routes = app[ROUTES]
        self.authenticator = app[AUTHENTICATOR]
        self.upstream = app[UPSTREAM]
        self.model_state = app[MODEL_STATE]
        self.router = app[ROUTER]
        self.shadow = app[SHADOW]
        self.model_name = self.config.model.name
        self.sink = app[INFERENCE_LOG]
        self.shutting_down = app[SHUTTING_DOWN]
        self.tracing = app[TRACING]
        # durability spooled: an answer leaves only once its record is in the spool file.
        self.durable = self.config.logging.durability is LogDurability.SPOOLED
        self.max_request_bytes = self.config.limits.max_request_bytes
        self.handlers: dict[RouteKind, Handler] = {
            RouteKind.INFERENCE: self.infer,
            RouteKind.MODEL_STATUS: self.model_info,
            RouteKind.MODEL_METADATA: self.model_info,
            RouteKind.HEALTHZ: self.healthz,
            RouteKind.READYZ: self.readyz,
            RouteKind.METRICS: self.prometheus,
        }

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        # The usual paths are canonical as sent: one dict lookup. Anything else is made
        # canonical (or refused) once, and that same form is authorized, routed and forwarded.
        exact = self.routes.lookup_exact(request.raw_path)
        probe = exact if exact is not None else self.routes.lookup_exact(request.path)
        if probe is not None and probe.public:  # a scrape with a query too: no load either
            return await self._answer(request, exact)
        # Held from arrival to answer, the log's wait included: the concurrency the autoscaler
        # scales on (probes and scrapes are not the model's load).
        concurrency = self.metrics.concurrency
        concurrency.arrived()
        try:
            return await self._answer(request, exact)
        finally:
            concurrency.answered()

    async def _answer(self, request: web.BaseRequest, exact: Route | None) -> web.StreamResponse:
        started = time.perf_counter()
        headers = request.headers
        call = Call(request_id(headers.get(REQUEST_ID)))
        raw = request.raw_path
        # Probes and scrapes (/healthz, /readyz, /metrics) pass a trace context on but are given
        # no span: at a ratio above 0 the kubelet and Prometheus would fill the traces.
        begin_trace(
            call,
            self.tracing if exact is None or not exact.public else None,
            headers.get(TRACEPARENT),
            headers.get(TRACESTATE),
            request.method,
            SpanKind.SERVER,
        )
        if call.span is not None:
            call.span.set_attributes(
                {"http.request.method": request.method, "url.path": request.path}
            )
        route = _REFUSED
        try:
            route = exact or self.routes.resolve(canonical_path(raw))
            # Everything but /healthz, /readyz and /metrics needs a credential, unknown paths
            # included: nothing about the API is told to a caller who has not shown one.
            if not route.public:
                authorization = headers.get(hdrs.AUTHORIZATION)
                call.caller = await authenticate(
                    self.authenticator, self.metrics, authorization, self.tracing, call.span
                )
            if route.kind is RouteKind.NOT_FOUND:
                raise SidecarError(404, route.error)
            if request.method not in route.methods:
                allow = ", ".join(sorted(route.methods))
                raise SidecarError(
                    405, f"Method {request.method} is not allowed here", {"Allow": allow}
                )
            response = await self.handlers[route.kind](request, call, route)
        except SidecarError as exc:
            response = _failed(exc.status, exc.message, call, exc.headers)
        except web.HTTPException as exc:
            response = _failed(exc.status, exc.reason, call)
        except Exception:
            log.exception("the sidecar failed on %s %s", request.method, route.label)
            response = _failed(500, "The sidecar failed on this request", call)
        if call.to_log:
            exchange = exchange_of(
                call,
                response.status,
                _sent_body(response),
                call.traceparent,
                self.router.table.default,
            )
            waiting = log_exchange(
                self.sink,  # type: ignore[arg-type]
                exchange,
                self.durable,
                self.tracing,
                call.span,
            )
            if waiting is not None and not await waiting:
                response = _failed(503, LOG_CANNOT_KEEP, call)  # no answer without its record
        if call.shadow is not None:
            content_type = headers.get(hdrs.CONTENT_TYPE, JSON)
            copy_to_shadow(
                self.shadow, call, route.label, call.request_body, content_type, call.traceparent
            )
        seconds = time.perf_counter() - started
        self.metrics.request_done(route.label, response.status, seconds, call.served)
        response.headers[TRACEPARENT] = call.traceparent
        if call.span is not None:
            context = call.span.get_span_context()
            self.metrics.latency_exemplar(
                route.label,
                seconds,
                call.served,
                format_trace_id(context.trace_id),
                format_span_id(context.span_id),
            )
            http_server_done(
                call.span,
                response.status,
                route.upstream_path,
                self.model_name,
                call.served,
                call.caller,
            )
        return response

    async def infer(self, request: web.BaseRequest, call: Call, route: Route) -> web.StreamResponse:
        """:predict, :classify, :regress: the body is forwarded as bytes (never parsed) and logged.

        Every authorized POST to such a path of this model is logged once answered, errors of the
        sidecar's own included; refused credentials are not (no model was asked anything), nor
        requests turned away because the inference log itself is full.
        """
        sink = self.sink
        call.to_log = sink is not None
        headers = request.headers
        if hdrs.EXPECT in headers:
            await _continue(request)
        call.request_body = await read_body(request, self.max_request_bytes)
        if sink is not None and not sink.accepting():
            call.to_log = False
            raise SidecarError(503, LOG_FULL)
        call.version = version = choose_version(
            call,
            self.router.table,
            self.model_name,
            route.model_version,
            route.version_label,
            headers,
            self.shadow,
        )
        try:
            answer = await self.forward(
                call,
                "POST",
                version.paths[route.label] if version is not None else route.upstream_path,
                call.request_body,
                headers.get(hdrs.CONTENT_TYPE, JSON),
            )
        except SidecarError:
            call.served = served_by(version, False)  # no answer (504, 502): as over gRPC
            raise
        call.served = served_by(version, answer.status == 200)
        self.metrics.upstream_done(route.label, answer.seconds, call.served)
        return _passed_on(answer, call)

    async def model_info(
        self, request: web.BaseRequest, call: Call, route: Route
    ) -> web.StreamResponse:
        """Model status and metadata: TF Serving's answer as it comes (a label the routing names
        is asked as its version)."""
        path = route.upstream_path
        if route.version_label is not None:
            version = self.router.table.by_label.get(route.version_label)
            if version is not None:
                path = version.paths[route.label]
        answer = await self.forward(call, "GET", path)
        self.metrics.upstream_done(route.label, answer.seconds)
        return _passed_on(answer, call)

    async def forward(
        self,
        call: Call,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = JSON,
    ) -> UpstreamAnswer:
        """The call to TF Serving, with the call's request id and trace context; in a span of
        its own (whose context TF Serving gets) when the call is sampled."""
        if call.span is None or self.tracing is None:
            return await self.upstream.forward(
                method,
                path,
                body,
                content_type=content_type,
                request_id=call.request_id,
                traceparent=call.traceparent,
                tracestate=call.tracestate,
            )
        span = self.tracing.child(
            call.span,
            f"{method} {path}",
            SpanKind.CLIENT,
            {"http.request.method": method, "url.path": path},
        )
        try:
            answer = await self.upstream.forward(
                method,
                path,
                body,
                content_type=content_type,
                request_id=call.request_id,
                traceparent=traceparent_of_span(span),
                tracestate=call.tracestate,
            )
        except SidecarError as exc:
            end_failed(span, str(exc.status))
            raise
        span.set_attribute("http.response.status_code", answer.status)
        if answer.status >= 400:  # a client span's error: any 4xx or 5xx (HTTP's conventions)
            end_failed(span, str(answer.status))
        else:
            span.end()
        return answer

    async def healthz(
        self, request: web.BaseRequest, call: Call, route: Route
    ) -> web.StreamResponse:
        """Alive unless the inference log stopped working for good: then 503 with why, so that
        the kubelet restarts the sidecar (its spool keeps what was written)."""
        failure = self.sink.failure() if self.sink is not None else None
        if failure is None:
            return _json(200, _ALIVE, call)
        body = json.dumps({"error": f"The inference log stopped: {failure}"}).encode()
        return _json(503, body, call)

    async def readyz(
        self, request: web.BaseRequest, call: Call, route: Route
    ) -> web.StreamResponse:
        """Ready when TF Serving reports AVAILABLE a version the split may send traffic to, and
        the sidecar is not shutting down."""
        if self.shutting_down.is_set():
            return _json(503, _STOPPING, call)
        await self.model_state.fresh(READY_CACHE_SECONDS)  # the table follows each new look
        if self.router.table.ready:
            return _json(200, _READY, call)
        return _json(503, _NOT_READY, call)

    async def prometheus(
        self, request: web.BaseRequest, call: Call, route: Route
    ) -> web.StreamResponse:
        # `?name[]=...` asks for those metrics alone, as Prometheus' clients allow (the
        # operator's autoscaler reads the concurrency of every pod every 2 s this way).
        names = request.query.getall("name[]", ())
        registry = self.registry.restricted_registry(names) if names else self.registry
        # OpenMetrics when the scraper asks for it (Prometheus does): the exposition that
        # carries the latency buckets' exemplars.
        if OPENMETRICS in request.headers.get(hdrs.ACCEPT, ""):
            body = openmetrics_latest(registry)  # type: ignore[no-untyped-call]
            content_type = OPENMETRICS_CONTENT_TYPE
        else:
            body, content_type = generate_latest(registry), CONTENT_TYPE_LATEST
        headers = {hdrs.CONTENT_TYPE: content_type, REQUEST_ID: call.request_id}
        return web.Response(body=body, headers=headers)


def _failed(
    status: int, message: str, call: Call, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The sidecar's own answer, in TF Serving's words, with our request id."""
    response = error_response(status, message, headers)
    response.headers[REQUEST_ID] = call.request_id
    return response


def _sent_body(response: web.StreamResponse) -> bytes:
    """The body the caller got, for the log (a streamed answer's is not kept)."""
    body = response.body if isinstance(response, web.Response) else b""
    return body if isinstance(body, bytes) else b""


def _passed_on(answer: UpstreamAnswer, call: Call) -> web.Response:
    """TF Serving's answer as it came: its code, body and content type, with our request id and
    the version that answered."""
    headers = {hdrs.CONTENT_TYPE: answer.content_type, REQUEST_ID: call.request_id}
    if call.served:
        headers[MODEL_VERSION] = call.served
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def _json(status: int, body: bytes, call: Call) -> web.Response:
    return web.Response(
        status=status, body=body, headers={hdrs.CONTENT_TYPE: JSON, REQUEST_ID: call.request_id}
    )


async def _continue(request: web.BaseRequest) -> None:
    """`Expect: 100-continue` (curl sends it for bodies over 1 KB): the caller passed auth and
    waits for our word before sending the body. Any other expectation is refused (417)."""
    if request.headers[hdrs.EXPECT].lower() != "100-continue":
        raise SidecarError(417, f"Unknown Expect: {request.headers[hdrs.EXPECT]}")
    if request.version >= HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _through_router(request: web.Request) -> web.StreamResponse:
    """The app's only route, for runners other than SidecarRunner: the same request path."""
    return await request.app[REQUEST_PATH](request)


class SidecarRunner(DirectAppRunner):
    """Runs the sidecar's app (its cleanup contexts, its keys) with aiohttp's server calling
    `RequestPath` directly, instead of through the router and middlewares."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, REQUEST_PATH, **kwargs)


def create_app(
    config: SidecarConfig,
    *,
    registry: CollectorRegistry | None = None,
    inference_log: SinkFactory | None = None,
    routing_file: Path | None = None,
) -> web.Application:
    """The sidecar for one serving. `inference_log` replaces the Kafka-backed log (tests); without
    it the log is opened only when `logging.mode` is not NONE. `routing_file` is the routing
    (`routing.yaml`), read at start and whenever it changes; without it, or while it does not
    exist, every request goes to `model.version`."""
    app = web.Application(client_max_size=config.limits.max_request_bytes)
    app[CONFIG] = config
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = SidecarMetrics(app[REGISTRY])
    app[ROUTES] = RouteTable(config.model.name, config.serving.namespace, config.serving.project_id)
    app[ROUTING_FILE] = routing_file
    app[SHUTTING_DOWN] = asyncio.Event()
    app.router.add_route("*", "/{path:.*}", _through_router)
    # Opened in this order and closed in the reverse one: the log closes (and drains) last.
    app.cleanup_ctx.append(_inference_log_step(inference_log))
    app.cleanup_ctx.append(_tracing_step)
    app.cleanup_ctx.append(_upstream_step)
    app.cleanup_ctx.append(_auth_step)
    app.cleanup_ctx.append(_shadow_step)
    app.cleanup_ctx.append(_model_report_step)
    app.cleanup_ctx.append(_request_path_step)
    return app


def _inference_log_step(
    factory: SinkFactory | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def inference_log(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        chosen = factory
        if chosen is None and config.logging.mode is not LoggingMode.NONE:
            # Imported here: the Kafka pipeline is only loaded by pods that log.
            from modelserving_sidecar.log.pipeline import open_inference_log

            chosen = open_inference_log
        if chosen is None:
            app[INFERENCE_LOG] = None
            yield
            return
        async with chosen(config, app[REGISTRY]) as sink:
            app[INFERENCE_LOG] = sink
            yield

    return inference_log


async def _tracing_step(app: web.Application) -> AsyncIterator[None]:
    """The span exporter, when a collector is named; closed after the request path, so that the
    last calls' spans are sent."""
    async with Tracing.running(app[CONFIG], app[REGISTRY]) as tracing:
        app[TRACING] = tracing
        yield


async def _upstream_step(app: web.Application) -> AsyncIterator[None]:
    """TF Serving: the connections to it, what it says of the model, and the router that
    splits over the versions it reports AVAILABLE."""
    model, upstream_config = app[CONFIG].model, app[CONFIG].upstream
    async with (
        Upstream.running(upstream_config) as upstream,
        Router.running(model.name, model.version, app[ROUTING_FILE]) as router,
        ModelStateWatcher.running(
            upstream,
            model.name,
            startup_allowance_seconds=upstream_config.startup_allowance_seconds,
        ) as model_state,
    ):
        model_state.on_change(router.model_state_changed)
        app[UPSTREAM], app[ROUTER], app[MODEL_STATE] = upstream, router, model_state
        yield


async def _model_report_step(app: web.Application) -> AsyncIterator[None]:
    """The pod's model report (in a pod only): TF Serving's view, the served counts, auth."""
    model_state, router, authenticator = app[MODEL_STATE], app[ROUTER], app[AUTHENTICATOR]
    async with publishing_model_report(
        lambda: model_state.fresh(WATCHED_AGE_SECONDS),
        lambda: router.routing,
        app[METRICS].served_by_version,
        authenticator.health,
        app[CONFIG].auth.kubeconfig,
    ):
        yield


async def _shadow_step(app: web.Application) -> AsyncIterator[None]:
    async with ShadowSender.running(
        app[UPSTREAM], app[INFERENCE_LOG], app[CONFIG].shadow, app[METRICS], app[TRACING]
    ) as sender:
        app[SHADOW] = sender
        yield


class NoAuthenticator:
    """auth.mode none: every caller is let in, unnamed."""

    mode = AuthMode.NONE.value

    async def authenticate(self, authorization: str | None) -> str | None:
        return None

    def health(self) -> AuthHealth:
        return READY


@contextlib.asynccontextmanager
async def open_authenticator(config: SidecarConfig) -> AsyncIterator[Authenticator]:
    """The serving's authenticator, running (key reloads, API sessions) for the app's lifetime."""
    mode = config.auth.mode
    if mode is AuthMode.NONE:
        log.warning(
            "auth.mode is none: ModelServing %s/%s answers anyone without a credential",
            config.serving.namespace,
            config.serving.name,
        )
        yield NoAuthenticator()
    elif mode is AuthMode.API_KEY:
        async with ApiKeyAuthenticator.running(config) as authenticator:
            yield authenticator
    else:
        try:
            api = await asyncio.to_thread(from_environment, config.auth.kubeconfig)
        except NoApiServer as exc:
            # Kept running, answering 503, so that the pod's model report can say why.
            log.error("auth.mode kubernetes: no token review client can be built: %s", exc)
            yield UnusableAuthenticator(
                mode.value, f"no Kubernetes API server to review tokens with: {exc}"
            )
            return
        async with KubernetesAuthenticator.running(config, api) as authenticator:
            yield authenticator


async def _auth_step(app: web.Application) -> AsyncIterator[None]:
    async with open_authenticator(app[CONFIG]) as authenticator:
        app[AUTHENTICATOR] = authenticator
        yield


async def _request_path_step(app: web.Application) -> AsyncIterator[None]:
    app[REQUEST_PATH] = RequestPath(app)
    yield
