"""Every private name of a library that the sidecar and the shared package rely on, in one place,
each where no public API does the job; `tests/unit/test_library_internals.py` fails loudly when a
library changes them. (kopf's, which only the operator uses, are in
`modelserving_operator.runtime.kopf_internals`.)

- aiohttp: `AppRunner._make_server` and `Server._make_request`, to serve an app's one handler
  directly (no router, no middleware, no `web.Request` per request) while keeping the app's
  startup and cleanup contexts; `BaseRunner._shutdown_timeout`, to stop listening (REST) at
  the same time as gRPC, before the cleanup contexts close the log.
- aiokafka: the producer's message accumulator, to fail the batches of a producer that is being
  replaced (`stop()` waits for them, which with the broker down never ends); the C record
  builder's module name and its size estimate; `aiokafka.conn.create_conn`, to connect once
  to a broker as a client would and see why TLS or SASL fails (the operator, the sidecar and
  the readers diagnose a refused connection with it: its clients say only "unable to
  bootstrap").
- fastavro: the module name of its compiled writer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


class DirectAppRunner(web.AppRunner):
    """Runs an app (its startup, cleanup contexts and keys) with aiohttp's server calling the
    handler stored under `handler_key` directly with plain `BaseRequest`s."""

    def __init__(self, app: web.Application, handler_key: web.AppKey[Any], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_key = handler_key

    async def stop_listening(self) -> None:
        """The first half of `cleanup()`: no new connections, and requests in flight get the
        shutdown timeout; the app's cleanup contexts are left to `cleanup()`, which then finds
        nothing more to wait for."""
        for site in list(self.sites):
            await site.stop()
        server = self.server
        if server is not None:
            await asyncio.sleep(0)  # requests that arrived before the sites stopped start
            server.pre_shutdown()
            await server.shutdown(self._shutdown_timeout)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = self.app[self._handler_key]
        server.request_factory = server._make_request  # a plain BaseRequest: no router state
        return server


async def connect_to_broker(host: str, port: int, **options: Any) -> Any:
    """One connection to a broker made as aiokafka's clients make theirs (`options`: aiokafka's
    client options and `request_timeout_ms`), TLS handshake and SASL authentication included;
    what refuses it raises with the TLS or SASL error in its chain. The caller closes it."""
    from aiokafka.conn import create_conn

    return await create_conn(host, port, **options)


def fail_pending_batches(producer: AIOKafkaProducer, error: Exception) -> None:
    """Fail every batch a producer holds, so that its `stop()` returns."""
    producer._message_accumulator.fail_all(error)


def record_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """The bytes a record takes in a Kafka batch, as the producer works it out."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def missing_c_extensions() -> list[str]:
    """The libraries whose C extensions are not in use (the pure-Python ones are much slower)."""
    import fastavro
    from aiokafka.record import default_records

    missing = []
    if "_crecords" not in default_records.DefaultRecordBatchBuilder.__module__:
        missing.append("aiokafka")
    if fastavro.schemaless_writer.__module__ != "fastavro._write":
        missing.append("fastavro")
    return missing
