"""The sidecar's aiohttp app: the request path, read top to bottom, is canonical path and route,
then credential, then the route's handler (proxy to TF Serving), then the inference log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelserving.sidecar.auth import Authenticator, open_authenticator
from modelserving.sidecar.config import LoggingMode, SidecarConfig
from modelserving.sidecar.errors import JSON, SidecarError, error_response
from modelserving.sidecar.exchange import Exchange, InferenceLogSink
from modelserving.sidecar.metrics import SidecarMetrics
from modelserving.sidecar.paths import Route, RouteKind, RouteTable, canonical_path
from modelserving.sidecar.proxy import Upstream, read_body
from modelserving.sidecar.readiness import ModelReadiness
from modelserving.sidecar.request_id import HEADER as REQUEST_ID
from modelserving.sidecar.request_id import request_id

log = logging.getLogger(__name__)

SinkFactory = Callable[
    [SidecarConfig, CollectorRegistry], AbstractAsyncContextManager[InferenceLogSink]
]

CONFIG = web.AppKey("config", SidecarConfig)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", SidecarMetrics)
ROUTES = web.AppKey("routes", RouteTable)
UPSTREAM = web.AppKey("upstream", Upstream)
READINESS = web.AppKey("readiness", ModelReadiness)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
INFERENCE_LOG: web.AppKey[InferenceLogSink | None] = web.AppKey("inference_log")

_REFUSED = Route(RouteKind.NOT_FOUND, "refused", frozenset())
_AUTH_RESULTS = {401: "unauthenticated", 403: "forbidden"}
_ALIVE = b'{"status": "alive"}'
_READY = b'{"status": "ready"}'
_NOT_READY = b'{"error": "The model is not AVAILABLE in TF Serving yet"}'


class Call:
    """One request's state as it goes down the path."""

    __slots__ = ("caller", "received_ms", "request_body", "request_id", "route", "to_log")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.received_ms = time.time_ns() // 1_000_000
        self.route = _REFUSED
        self.caller: str | None = None
        self.request_body = b""
        self.to_log = False


CALL = web.RequestKey("call", Call)


@web.middleware
async def edge_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id, canonical path and route; TF Serving's error body for whatever goes wrong;
    the inference log and the metrics once the answer is out."""
    started = time.perf_counter()
    app = request.app
    call = Call(request_id(request.headers.get(REQUEST_ID)))
    request[CALL] = call
    try:
        raw = request.raw_path
        routes = app[ROUTES]
        # The usual paths are canonical as sent: one dict lookup. Anything else is made canonical
        # (or refused) once, and that same form is authorized, routed and forwarded.
        call.route = routes.lookup_exact(raw) or routes.resolve(canonical_path(raw))
        response = await handler(request)
    except SidecarError as exc:
        response = error_response(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        response = error_response(exc.status, exc.reason)
    except Exception:
        log.exception("the sidecar failed on %s %s", request.method, call.route.label)
        response = error_response(500, "The sidecar failed on this request")
    response.headers[REQUEST_ID] = call.request_id
    if call.to_log:
        await _send_then_log(request, response, call)
    app[METRICS].request_done(call.route.label, response.status, time.perf_counter() - started)
    return response


async def _send_then_log(request: web.Request, response: web.StreamResponse, call: Call) -> None:
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the caller left; the exchange is still what TF Serving made of its request
    sink = request.app[INFERENCE_LOG]
    if sink is not None:
        body = response.body if isinstance(response, web.Response) else b""
        sink.submit(
            Exchange(
                request_id=call.request_id,
                received_ms=call.received_ms,
                status=response.status,
                request_body=call.request_body,
                response_body=body if isinstance(body, bytes) else b"",
                model_version=call.route.model_version,
                caller=call.caller,
                traceparent=request.headers.get("traceparent"),
            )
        )


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Everything but /healthz, /readyz and /metrics needs a credential, unknown paths included:
    nothing about the API is told to a caller who has not shown one."""
    call = request[CALL]
    if call.route.public:
        return await handler(request)
    authenticator = request.app[AUTHENTICATOR]
    metrics = request.app[METRICS]
    try:
        call.caller = await authenticator.authenticate(request.headers.get(hdrs.AUTHORIZATION))
    except SidecarError as exc:
        metrics.auth_result(authenticator.mode, _AUTH_RESULTS.get(exc.status, "error"))
        raise
    metrics.auth_result(authenticator.mode, "allowed")
    return await handler(request)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """The one aiohttp route: the middlewares have already chosen ours."""
    call = request[CALL]
    route = call.route
    if route.kind is RouteKind.NOT_FOUND:
        raise SidecarError(404, route.error)
    if request.method not in route.methods:
        allow = ", ".join(sorted(route.methods))
        raise SidecarError(405, f"Method {request.method} is not allowed here", {"Allow": allow})
    return await _HANDLERS[route.kind](request, call)


async def infer(request: web.Request, call: Call) -> web.StreamResponse:
    """:predict, :classify, :regress: the body is forwarded as bytes (never parsed) and logged.

    Every authorized POST to such a path of this model is logged once answered, errors of the
    sidecar's own included; refused credentials are not (no model was asked anything), nor
    requests turned away because the inference log itself is full.
    """
    app = request.app
    sink = app[INFERENCE_LOG]
    call.to_log = sink is not None
    call.request_body = await read_body(request, app[CONFIG].limits.max_request_bytes)
    if sink is not None and not sink.accepting():
        call.to_log = False
        raise SidecarError(503, "The inference log is full; try again later")
    route = call.route
    answer = await app[UPSTREAM].forward(
        "POST",
        route.upstream_path,
        call.request_body,
        content_type=request.headers.get(hdrs.CONTENT_TYPE, JSON),
        request_id=call.request_id,
    )
    app[METRICS].upstream_done(route.label, answer.seconds)
    return web.Response(
        status=answer.status, body=answer.body, headers={hdrs.CONTENT_TYPE: answer.content_type}
    )


async def model_info(request: web.Request, call: Call) -> web.StreamResponse:
    """Model status and metadata: TF Serving's answer as it comes."""
    upstream = request.app[UPSTREAM]
    answer = await upstream.forward("GET", call.route.upstream_path, request_id=call.request_id)
    request.app[METRICS].upstream_done(call.route.label, answer.seconds)
    return web.Response(
        status=answer.status, body=answer.body, headers={hdrs.CONTENT_TYPE: answer.content_type}
    )


async def healthz(request: web.Request, call: Call) -> web.StreamResponse:
    return web.Response(body=_ALIVE, content_type=JSON)


async def readyz(request: web.Request, call: Call) -> web.StreamResponse:
    if await request.app[READINESS].ready():
        return web.Response(body=_READY, content_type=JSON)
    return web.Response(status=503, body=_NOT_READY, content_type=JSON)


async def metrics(request: web.Request, call: Call) -> web.StreamResponse:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


_HANDLERS: dict[RouteKind, Callable[[web.Request, Call], Awaitable[web.StreamResponse]]] = {
    RouteKind.INFERENCE: infer,
    RouteKind.MODEL_STATUS: model_info,
    RouteKind.MODEL_METADATA: model_info,
    RouteKind.HEALTHZ: healthz,
    RouteKind.READYZ: readyz,
    RouteKind.METRICS: metrics,
}


def create_app(
    config: SidecarConfig,
    *,
    registry: CollectorRegistry | None = None,
    inference_log: SinkFactory | None = None,
) -> web.Application:
    """The sidecar for one serving. `inference_log` replaces the Kafka-backed log (tests); without
    it the log is opened only when `logging.mode` is not NONE."""
    app = web.Application(
        middlewares=[edge_middleware, auth_middleware],
        client_max_size=config.limits.max_request_bytes,
    )
    app[CONFIG] = config
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = SidecarMetrics(app[REGISTRY])
    app[ROUTES] = RouteTable(
        config.model.name, config.model.version, config.serving.namespace, config.serving.project_id
    )
    app.router.add_route("*", "/{path:.*}", dispatch)
    # Opened in this order and closed in the reverse one: the log closes (and drains) last.
    app.cleanup_ctx.append(_inference_log_step(inference_log))
    app.cleanup_ctx.append(_upstream_step)
    app.cleanup_ctx.append(_auth_step)
    return app


def _inference_log_step(
    factory: SinkFactory | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def inference_log(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        chosen = factory
        if chosen is None and config.logging.mode is not LoggingMode.NONE:
            # Imported here: the Kafka pipeline is only loaded by pods that log.
            from modelserving.sidecar.inference_log import open_inference_log

            chosen = open_inference_log
        if chosen is None:
            app[INFERENCE_LOG] = None
            yield
            return
        async with chosen(config, app[REGISTRY]) as sink:
            app[INFERENCE_LOG] = sink
            yield

    return inference_log


async def _upstream_step(app: web.Application) -> AsyncIterator[None]:
    async with Upstream.running(app[CONFIG].upstream) as upstream:
        app[UPSTREAM] = upstream
        app[READINESS] = ModelReadiness(upstream, app[CONFIG].model.name)
        yield


async def _auth_step(app: web.Application) -> AsyncIterator[None]:
    async with open_authenticator(app[CONFIG]) as authenticator:
        app[AUTHENTICATOR] = authenticator
        yield
