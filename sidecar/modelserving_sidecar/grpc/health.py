"""gRPC's standard health checking service on the sidecar's gRPC port (`grpc.health.v1.Health`,
Check and Watch: what Kubernetes' grpc probes, Envoy and gRPC clients ask): SERVING when TF
Serving reports AVAILABLE a version the split may send traffic to, the answer /readyz gives,
NOT_SERVING otherwise and from the moment the sidecar shuts down; for "" (the server) and
TF Serving's PredictionService. Like /healthz and /readyz it needs no credential and is not
logged.

Check asks TF Serving again when its last look is older than /readyz's cache; Watch sends the
status at once and then each change, as the table the split reads is made again (each look at
TF Serving that changes the AVAILABLE versions, each routing change). A watcher waits on an
event of its own generation, so a slow one holds no lock and delays no other.

The two messages (HealthCheckRequest {string service = 1}, HealthCheckResponse {ServingStatus
status = 1}) are read and written as their few bytes, not from generated modules: a process
that imports this package and grpcio-health-checking's messages (a user's client, the tests)
would otherwise hold two definitions of `grpc.health.v1`, which protobuf refuses.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Iterable

import grpc

from modelserving_sidecar.grpc.wire import WireError, string_field
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.model.state import ModelStateWatcher
from modelserving_sidecar.routing.router import Router
from modelserving_sidecar.routing.split import SplitTable

HEALTH_SERVICE = "grpc.health.v1.Health"
_LABEL = "grpc_health"  # the metrics' route label of Check


class ServingStatus(enum.IntEnum):
    """HealthCheckResponse.ServingStatus."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3  # Watch's answer for a service the server does not know

    def encoded(self) -> bytes:
        """The HealthCheckResponse holding this status (proto3 writes no field for 0)."""
        return b"\x08" + bytes([self.value]) if self.value else b""


def requested_service(request: bytes) -> str:
    """The service a HealthCheckRequest asks about ("": the server as a whole)."""
    return string_field(request, 1)


class HealthService:
    """Check and Watch for the services in `services`, from the router's table."""

    def __init__(
        self,
        services: Iterable[str],
        model_state: ModelStateWatcher,
        router: Router,
        metrics: SidecarMetrics,
        fresh_seconds: float,
    ) -> None:
        self.services = frozenset(services)
        self._model_state = model_state
        self._router = router
        self._metrics = metrics
        self._fresh_seconds = fresh_seconds
        self._shutting_down = False
        self._changed = asyncio.Event()
        router.on_change(self._table_changed)

    def status(self, service: str) -> ServingStatus:
        if service not in self.services:
            return ServingStatus.SERVICE_UNKNOWN
        if self._shutting_down or not self._router.table.ready:
            return ServingStatus.NOT_SERVING
        return ServingStatus.SERVING

    def _table_changed(self, table: SplitTable) -> None:
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def shut_down(self) -> None:
        """NOT_SERVING from now on, told to every watcher: the sidecar is stopping, callers
        should go elsewhere while the calls in flight finish."""
        self._shutting_down = True
        self._notify()

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            HEALTH_SERVICE,
            {
                "Check": grpc.unary_unary_rpc_method_handler(self.check),
                "Watch": grpc.unary_stream_rpc_method_handler(self.watch),
            },
        )

    async def check(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        started = time.perf_counter()
        service = await _service_of(request, context)
        if service not in self.services:
            self._metrics.request_done(_LABEL, 404, time.perf_counter() - started)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        await self._model_state.fresh(self._fresh_seconds)  # the table follows each new look
        status = self.status(service)
        self._metrics.request_done(_LABEL, 200, time.perf_counter() - started)
        return status.encoded()

    async def watch(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """The status now, then each change, until the caller goes or the sidecar stops (a
        service this server does not know: SERVICE_UNKNOWN, the call kept open, as the protocol
        says)."""
        service = await _service_of(request, context)
        sent = None
        while True:
            changed = self._changed  # taken before the status: no change can slip between
            status = self.status(service)
            if status is not sent:
                yield status.encoded()
                sent = status
            if self._shutting_down:
                return  # told; an open stream would hold the server's stop for its whole grace
            await changed.wait()


async def _service_of(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> str:
    try:
        return requested_service(request)
    except WireError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse the request: {exc}")
        raise  # abort raises; this only tells the type checker
