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
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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

log = logging.getLogger(__name__)
T = TypeVar("T")

# A pod marked ready whose port refuses: tried again after this long, doubling up to the max,
# until the request's deadline.
RETRY_FIRST_SECONDS = 0.02
RETRY_MAX_SECONDS = 0.5
# How many connections to pods at once, all servings together.
POD_CONNECTIONS = 1000
_OWN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


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

    def put_servings(self, objs: Iterable[dict[str, Any]]) -> None:
        self.hosts.replace_all(serving_of(o, self.settings.cluster_domain) for o in objs)

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
        return await self._for_serving(request, found)

    async def _for_serving(self, request: web.Request, serving: Serving) -> web.StreamResponse:
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
            answer = await self._to_a_pod(ref, request, body)
        except NotHeld as exc:
            self.metrics.refused(exc.reason, ref)
            return self._unavailable(ref, exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.refused("pod_failed", ref)
            log.warning("%s: its pod took the request and gave no answer: %r", ref, exc)
            return error_response(502, f"The pod of serving {ref} gave no answer")
        self.metrics.forwarded(ref)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _to_a_pod(self, ref: ServingRef, request: web.Request, body: bytes) -> Answer:
        assert self.session is not None
        session = self.session

        def send(address: str) -> Awaitable[Answer]:
            url = pod_url(address, self.settings.pod_port, request.raw_path)
            return forward(session, url, request.method, request.headers, body)

        return await self.to_a_pod(ref, send, self.settings.hold_seconds)

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
        activator = Activator(settings, cluster, registry or CollectorRegistry())
        activator.session = pod_session(POD_CONNECTIONS)
        app[ACTIVATOR] = activator
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

    app.cleanup_ctx.append(running)
    return app
