"""The activator's aiohttp app. A request's path, top to bottom (`Activator.handle`): the
serving its Host names (404 when none), the credential's scheme (401 before anything wakes),
then a usable pod in turn, or the hold queue while the serving wakes (503 with Retry-After past
the deadline or with the queue full), then the pod's answer passed back as it is.

A Host that names no serving is the activator's own: /healthz, /readyz (once ModelServings and
serving pods are both listed) and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from opentelemetry.sdk.trace import Span
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from yarl import URL

from modelserving.api import SIDECAR_GRPC_PORT, SIDECAR_PORT
from modelserving.kube_access import ApiServer, from_environment
from modelserving_sidecar.activator import watches
from modelserving_sidecar.activator.cluster import Cluster, pods_path, servings_path
from modelserving_sidecar.activator.credentials import missing_credential
from modelserving_sidecar.activator.hold import HeldTooLong, HoldQueues, NotHeld, Stopping
from modelserving_sidecar.activator.hosts import (
    DEFAULT_CLUSTER_DOMAIN,
    HostTable,
    Serving,
    ServingRef,
    Shared,
    serving_of,
)
from modelserving_sidecar.activator.metrics import ActivatorMetrics
from modelserving_sidecar.activator.pods import SERVING_PODS, ReadyPods
from modelserving_sidecar.activator.proxy import Answer, NotSent, forward, pod_session, pod_url
from modelserving_sidecar.activator.wake import WakeLimiter, Waker
from modelserving_sidecar.errors import JSON, error_body, error_response
from modelserving_sidecar.tracing.context import (
    TRACEPARENT,
    TRACESTATE,
    continued,
    passed_on_state,
)
from modelserving_sidecar.tracing.spans import Tracing, end_failed, traceparent_of_span

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE_NAME = "modelserving-activator"

# A pod marked ready whose port refuses: tried again after this long, doubling up to the max,
# until the request's deadline.
RETRY_FIRST_SECONDS = 0.02
RETRY_MAX_SECONDS = 0.5
# How many connections to pods at once, all servings together.
POD_CONNECTIONS = 1000
_OWN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# The activator's span attributes, beside HTTP's semantic conventions.
SERVING_ATTRIBUTE = "modelserving.serving"  # namespace/name
HELD_SECONDS = "modelserving.activator.held_seconds"  # from arrival to the send to a pod


@dataclass(frozen=True)
class ActivatorSettings:
    """The activator's flags (`modelserving activator --help` says each)."""

    namespace: str = ""  # "": every namespace
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    kubeconfig: str = ""
    pod_port: int = SIDECAR_PORT
    pod_grpc_port: int = SIDECAR_GRPC_PORT
    grpc_handoff_seconds: float = 10.0
    queue_size: int = 100
    hold_seconds: float = 60.0
    wake_interval: float = 5.0
    retry_after: int = 5
    max_request_bytes: int = 10 * 1024 * 1024
    tracing_endpoint: str = ""  # "": the OTEL_EXPORTER_OTLP_* variables', else no spans
    tracing_ratio: float = 0.0  # of the requests that come without a trace context


class Activator:
    """The activator's state and its request path."""

    def __init__(
        self, settings: ActivatorSettings, cluster: Cluster, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.hosts = HostTable()
        self.holds = HoldQueues(settings.queue_size, self._held)
        self.pods = ReadyPods(self._became_usable)
        self.metrics = ActivatorMetrics(registry, self._held_counts)
        self.waker = Waker(
            cluster,
            WakeLimiter(settings.wake_interval),
            self.holds.held,
            lambda ref: self.pods.count(ref) > 0,
            self.hosts.get,
            self.metrics.woken,
        )
        self.listed = (asyncio.Event(), asyncio.Event())  # servings, pods
        self.session: aiohttp.ClientSession | None = None
        self.tracing: Tracing | None = None
        # Requests whose pod refused the connection (ready, its port not open yet), per serving.
        self._refused_by_pod: Counter[ServingRef] = Counter()

    def _held(self, ref: ServingRef) -> None:
        self.waker.wanted(ref)

    def _held_counts(self) -> dict[ServingRef, int]:
        """Requests held per serving: in its queue, or waiting for a ready pod's port to open."""
        counts = Counter({ref: 0 for ref in self.hosts.refs()})
        counts.update(self.holds.counts())
        counts.update(self._refused_by_pod)
        return dict(counts)

    def _became_usable(self, ref: ServingRef) -> None:
        count, seconds = self.holds.release(ref)
        if seconds is not None:
            self.metrics.wake_took(seconds)
            log.info("%s has a usable pod: %d held requests go, after %.2f s", ref, count, seconds)

    def put_serving(self, obj: dict[str, Any], deleted: bool) -> None:
        serving = serving_of(obj, self.settings.cluster_domain)
        if deleted:
            self.hosts.remove(serving.ref)
        else:
            self.hosts.put(serving)
        self.metrics.keep(serving.ref, serving.to_zero and not deleted)

    def put_servings(self, objs: Iterable[dict[str, Any]]) -> None:
        servings = [serving_of(o, self.settings.cluster_domain) for o in objs]
        self.hosts.replace_all(servings)
        self.metrics.known(s.ref for s in servings if s.to_zero)

    def ready(self) -> bool:
        return all(e.is_set() for e in self.listed) and not self.holds.stopping

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST, "")
        found = self.hosts.lookup(host)
        if found is None:
            if request.path in _OWN_PATHS:
                return self._own(request.path)
            self.metrics.refused("unknown_host")
            return error_response(404, f"No serving answers to the host {host!r}")
        if isinstance(found, Shared):
            self.metrics.refused("shared_host")
            return error_response(404, found.message())
        span = self._server_span(request, found.ref)
        if span is None:
            return await self._for_serving(request, found, None)
        try:
            response = await self._for_serving(request, found, span)
        except BaseException as exc:
            end_failed(span, type(exc).__name__)
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            end_failed(span, str(response.status))
        else:
            span.end()
        return response

    def _server_span(self, request: web.Request, ref: ServingRef) -> Span | None:
        """The request's span when it is sampled (the caller's sampled trace continued, or
        `--tracing-ratio` of those without one), else None: no span, the trace context passed
        on as it came."""
        tracing = self.tracing
        if tracing is None:
            return None
        parent = continued(request.headers.get(TRACEPARENT))
        if not tracing.wants(parent):
            return None
        attributes = {
            "http.request.method": request.method,
            "url.path": request.path,
            "server.address": request.headers.get(hdrs.HOST, ""),
            SERVING_ATTRIBUTE: str(ref),
        }
        state = passed_on_state(request.headers.get(TRACESTATE))
        return tracing.server_span(
            f"{request.method} activator", SpanKind.SERVER, parent, state, attributes
        )

    async def _for_serving(
        self, request: web.Request, serving: Serving, span: Span | None
    ) -> web.StreamResponse:
        ref = serving.ref
        refusal = missing_credential(serving, request.headers.get(hdrs.AUTHORIZATION))
        if refusal is not None:
            self.metrics.refused("no_credentials", ref)
            return error_response(refusal.status, refusal.message, refusal.headers)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.refused("too_large", ref)
            limit = self.settings.max_request_bytes
            return error_response(413, f"The request body is larger than {limit} bytes")
        try:
            answer = await self._to_a_pod(ref, request, body, span)
        except NotHeld as exc:
            self.metrics.refused(exc.reason, ref)
            return self._unavailable(ref, exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.refused("pod_failed", ref)
            log.warning("%s: its pod took the request and gave no answer: %r", ref, exc)
            return error_response(502, f"The pod of serving {ref} gave no answer")
        self.metrics.forwarded(ref)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _to_a_pod(
        self, ref: ServingRef, request: web.Request, body: bytes, span: Span | None
    ) -> Answer:
        assert self.session is not None
        session, tracing, port = self.session, self.tracing, self.settings.pod_port

        def send(address: str) -> Awaitable[Answer]:
            url = pod_url(address, port, request.raw_path)
            if span is None or tracing is None:
                return forward(session, url, request.method, request.headers, body)
            return self._traced_send(tracing, span, session, url, address, request, body)

        return await self.to_a_pod(ref, send, self.settings.hold_seconds)

    async def _traced_send(
        self,
        tracing: Tracing,
        span: Span,
        session: aiohttp.ClientSession,
        url: URL,
        address: str,
        request: web.Request,
        body: bytes,
    ) -> Answer:
        """One try at the pod, as a client span whose context the pod's sidecar receives (its
        span is this one's child); how long the request was held before it is on the server
        span."""
        start = span.start_time or 0
        span.set_attribute(HELD_SECONDS, round((time.time_ns() - start) / 1e9, 6))
        attributes = {
            "http.request.method": request.method,
            "server.address": address,
            "server.port": self.settings.pod_port,
        }
        attempt = tracing.child(span, request.method, SpanKind.CLIENT, attributes)
        headers = CIMultiDict(request.headers)
        headers[TRACEPARENT] = traceparent_of_span(attempt)
        try:
            answer = await forward(session, url, request.method, headers, body)
        except NotSent:
            end_failed(attempt, "connection_refused")
            raise
        except BaseException as exc:
            end_failed(attempt, type(exc).__name__)
            raise
        attempt.set_attribute("http.response.status_code", answer.status)
        attempt.end()
        return answer

    async def to_a_pod(
        self, ref: ServingRef, send: Callable[[str], Awaitable[T]], hold_seconds: float
    ) -> T:
        """What `send` to a usable pod of the serving gives (it is given the pod's address),
        held for one for at most `hold_seconds`; a pod whose port refuses (`send` raises
        NotSent) is tried again (itself or the next in turn), as held too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + hold_seconds
        backoff = RETRY_FIRST_SECONDS
        refused = False
        try:
            while True:
                address = self.pods.pick(ref)
                if address is None:
                    await self.holds.hold(ref, deadline - loop.time())
                    continue
                try:
                    return await send(address)
                except NotSent as exc:
                    remaining = deadline - loop.time()
                    if self.holds.stopping:
                        raise Stopping() from None
                    if remaining <= 0:
                        raise HeldTooLong() from None
                    if not refused:
                        refused = True
                        self._refused_by_pod[ref] += 1
                    log.debug("%s refused: %s; again in %.2f s", address, exc, backoff)
                    await asyncio.sleep(min(backoff, remaining))
                    backoff = min(backoff * 2, RETRY_MAX_SECONDS)
        finally:
            if refused:
                self._refused_by_pod[ref] -= 1
                if not self._refused_by_pod[ref]:
                    del self._refused_by_pod[ref]

    def _unavailable(self, ref: ServingRef, refusal: NotHeld) -> web.Response:
        headers = {"Retry-After": str(self.settings.retry_after)}
        message = self.unavailable(ref, refusal, self.settings.hold_seconds)
        return error_response(503, message, headers)

    def unavailable(self, ref: ServingRef, refusal: NotHeld, held_seconds: float) -> str:
        """What a request that was not held (or held for `held_seconds`, in vain) is told."""
        if isinstance(refusal, Stopping):
            message = "The activator is stopping"
        elif isinstance(refusal, HeldTooLong):
            message = (
                f"The serving {ref} is scaled to zero and had no ready pod within "
                f"{held_seconds:g} s"
            )
        else:
            message = (
                f"The serving {ref} is scaled to zero and already holds "
                f"{self.settings.queue_size} requests while it wakes"
            )
        return f"{message}; try again"

    def _own(self, path: str) -> web.Response:
        if path == "/healthz":
            return web.Response(body=b'{"status": "alive"}', content_type=JSON)
        if path == "/readyz":
            if self.ready():
                return web.Response(body=b'{"status": "ready"}', content_type=JSON)
            return web.Response(
                status=503,
                body=error_body("The activator has not listed servings and pods yet"),
                content_type=JSON,
            )
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST},
        )

    def stop(self) -> None:
        """Refuse what is held and anything more (503 with Retry-After), and fail readiness."""
        count = self.holds.stop()
        if count:
            log.info("stopping: %d held requests answered 503", count)


ACTIVATOR = web.AppKey("activator", Activator)


async def _handle(request: web.Request) -> web.StreamResponse:
    return await request.app[ACTIVATOR].handle(request)


def create_app(
    settings: ActivatorSettings,
    *,
    registry: CollectorRegistry | None = None,
    api_server: ApiServer | None = None,
) -> web.Application:
    """The activator: its watches, wakes and pod connections open and close with the app."""
    app = web.Application(client_max_size=settings.max_request_bytes)
    app.router.add_route("*", "/{path:.*}", _handle)

    async def running(app: web.Application) -> AsyncIterator[None]:
        server = api_server
        if server is None:
            server = await asyncio.to_thread(from_environment, settings.kubeconfig)
        api_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl_context),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        cluster = Cluster(api_session, server)
        metrics_registry = registry or CollectorRegistry()
        activator = Activator(settings, cluster, metrics_registry)
        activator.session = pod_session(POD_CONNECTIONS)
        app[ACTIVATOR] = activator
        exits = contextlib.AsyncExitStack()
        activator.tracing = await exits.enter_async_context(
            Tracing.exporting(
                settings.tracing_endpoint,
                settings.tracing_ratio,
                metrics_registry,
                {"service.name": SERVICE_NAME},
                "activator",
            )
        )
        kept = [
            watches.Collection(
                "ModelServings",
                servings_path(settings.namespace),
                {},
                activator.put_servings,
                activator.put_serving,
            ),
            watches.Collection(
                "serving pods",
                pods_path(settings.namespace),
                {"labelSelector": SERVING_PODS},
                activator.pods.replace_all,
                activator.pods.update,
            ),
        ]
        tasks = [
            asyncio.create_task(watches.keep(cluster, c, listed))
            for c, listed in zip(kept, activator.listed, strict=True)
        ]
        log.info(
            "activator: API server %s, servings of %s",
            server.url,
            settings.namespace or "every namespace",
        )
        try:
            yield
        finally:
            activator.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await activator.waker.close()
            await activator.session.close()
            await api_session.close()
            await exits.aclose()

    app.cleanup_ctx.append(running)
    return app
