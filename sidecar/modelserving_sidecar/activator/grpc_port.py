"""The activator's gRPC port: a client's HTTP/2 connection to a serving at zero, held until the
serving has a pod, then joined to that pod's gRPC port byte for byte.

A connection's path, top to bottom (`GrpcPort.connection`): the activator's SETTINGS at once;
the client's first call read (h2.Opening): the serving its `:authority` names (NOT_FOUND when
none), a credential in the scheme of the serving's auth mode (UNAUTHENTICATED before anything
wakes, with the sidecar's own message); then the same hold and wake as a REST request
(Activator.to_a_pod), for at most --hold-seconds or the call's own deadline, whichever is
shorter (UNAVAILABLE past it, with gRPC's retry pushback); then a connection to the pod, the
client's bytes replayed to it as they came, and both ways passed on as they are. The pod's
sidecar authenticates and logs every call on the connection, as it does any other.

A joined connection stays one client's connection to one pod, as a connection through
kube-proxy does. So that it does not stay on the activator once the serving's endpoints are its
pods again, the activator tells the client to leave after --grpc-handoff-seconds (a GOAWAY that
lets every open call finish); the client's next calls open a connection through the Service.
SIGTERM tells it the same at once.

In the metrics a gRPC connection counts as the one request that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelserving_sidecar.activator import h2
from modelserving_sidecar.activator.app import Activator
from modelserving_sidecar.activator.credentials import missing_credential
from modelserving_sidecar.activator.hold import NotHeld
from modelserving_sidecar.activator.hosts import Serving, Shared
from modelserving_sidecar.activator.proxy import NotSent

log = logging.getLogger(__name__)

# gRPC status codes (grpc/doc/statuscodes.md) of the activator's own answers.
NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE, UNAUTHENTICATED = 5, 8, 14, 16
# What a client may send before its call has a pod: its first flow-control window (64 KiB of
# DATA) and headers, with room to spare; more is not a client that waits.
KEPT_BYTES = 1 << 20
# How long a connection may take to send its first call.
FIRST_CALL_SECONDS = 10.0
READ_SIZE = 1 << 16
# How long a refused client is given to read the refusal and close.
LINGER_SECONDS = 5.0


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Joined:
    """A client's connection joined to a pod's: where a GOAWAY of the activator's own may go
    into the pod's stream, and whether one is due."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.cursor = h2.FrameCursor()
        self.leave_due = False
        self.left = False

    def tell_to_leave(self) -> None:
        """A GOAWAY to the client now, when the pod's stream is between frames; else at the
        next place that is."""
        if self.left or self.client.is_closing():
            return
        if self.cursor.between:
            self.left = True
            self.client.write(h2.goaway(h2.ALL_STREAMS))
        else:
            self.leave_due = True

    def passed(self, data: bytes) -> bytes:
        """The pod's bytes, with the GOAWAY in them where it is due."""
        place = self.cursor.advance(data)
        if not self.leave_due or place is None:
            return data
        self.leave_due = False
        self.left = True
        return data[:place] + h2.goaway(h2.ALL_STREAMS) + data[place:]


class GrpcPort:
    """The activator's gRPC port; `connection` is asyncio.start_server's callback."""

    def __init__(self, activator: Activator) -> None:
        self.activator = activator
        self.settings = activator.settings
        self._joined: set[_Joined] = set()
        self._connections: set[asyncio.Task[None]] = set()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("a gRPC connection ended: %r", exc)
        except Exception:
            log.exception("a gRPC connection failed")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        metrics = self.activator.metrics
        writer.write(h2.SERVER_SETTINGS)
        opening = h2.Opening(KEPT_BYTES)
        try:
            async with asyncio.timeout(FIRST_CALL_SECONDS):
                while opening.call is None:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        return
                    opening.feed(data)
        except TimeoutError:  # a client that connected ahead of its calls: it may come again
            await _leave(reader, writer, h2.goaway(0))
            return
        except (h2.ProtocolError, h2.TooMuch) as exc:
            metrics.refused("not_grpc")
            log.debug("a connection to the gRPC port that sent no gRPC call: %r", exc)
            await _leave(reader, writer, h2.goaway(0, h2.PROTOCOL_ERROR))
            return
        call = opening.call
        found = self.activator.hosts.lookup(call.authority)
        if found is None or isinstance(found, Shared):
            reason = "unknown_host" if found is None else "shared_host"
            metrics.refused(reason)
            message = (
                f"No serving answers to the authority {call.authority!r}"
                if found is None
                else found.message()
            )
            await _leave(reader, writer, h2.refusal(call.stream, NOT_FOUND, message))
            return
        await self._for_serving(found, opening, reader, writer)

    async def _for_serving(
        self,
        serving: Serving,
        opening: h2.Opening,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        activator, metrics, ref = self.activator, self.activator.metrics, serving.ref
        call = opening.call
        assert call is not None
        refusal = missing_credential(serving, call.authorization)
        if refusal is not None:
            metrics.refused("no_credentials", ref)
            await _leave(reader, writer, h2.refusal(call.stream, UNAUTHENTICATED, refusal.message))
            return
        hold = self.settings.hold_seconds
        if call.timeout is not None:
            hold = min(hold, call.timeout)
        port = self.settings.pod_grpc_port

        async def connect(address: str) -> Streams:
            try:
                return await asyncio.open_connection(address, port)
            except OSError as exc:
                raise NotSent(str(exc)) from exc

        # The client is read on while it waits: its calls are kept, and a client that leaves
        # leaves the queue.
        reading = asyncio.create_task(_read_on(reader, opening))
        getting = asyncio.create_task(activator.to_a_pod(ref, connect, hold))
        try:
            await asyncio.wait({reading, getting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, getting):
                task.cancel()
            await asyncio.wait({reading, getting})  # each ended, however it did
        pod = None if getting.cancelled() or getting.exception() else getting.result()
        read = "held" if reading.cancelled() else reading.exception() or "left"
        if read != "held" and pod is not None:
            pod[1].close()
        if isinstance(read, h2.TooMuch):
            metrics.refused("too_large", ref)
            message = f"The client sent over {KEPT_BYTES} bytes before the serving {ref} had a pod"
            await _leave(reader, writer, h2.refusal(call.stream, RESOURCE_EXHAUSTED, message))
            return
        if isinstance(read, BaseException):
            metrics.refused("not_grpc", ref)
            await _leave(reader, writer, h2.goaway(0, h2.PROTOCOL_ERROR))
            return
        if read == "left":
            return
        if pod is None:
            error = getting.exception()
            if not isinstance(error, NotHeld):
                raise error or RuntimeError("held, then neither a pod nor a refusal")
            metrics.refused(error.reason, ref)
            pushback = {"grpc-retry-pushback-ms": str(self.settings.retry_after * 1000)}
            message = activator.unavailable(ref, error, hold)
            await _leave(reader, writer, h2.refusal(call.stream, UNAVAILABLE, message, pushback))
            return
        pod_reader, pod_writer = pod
        metrics.forwarded(ref)
        try:
            await self._join(opening, reader, writer, pod_reader, pod_writer)
        finally:
            pod_writer.close()

    async def _join(
        self,
        opening: h2.Opening,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pod_reader: asyncio.StreamReader,
        pod_writer: asyncio.StreamWriter,
    ) -> None:
        joined = _Joined(writer)
        self._joined.add(joined)
        handoff = asyncio.get_running_loop().call_later(
            self.settings.grpc_handoff_seconds, joined.tell_to_leave
        )
        pod_writer.write(opening.take())
        try:
            ways = [
                asyncio.create_task(_to_pod(reader, opening, pod_writer)),
                asyncio.create_task(_to_client(pod_reader, joined)),
            ]
            await _first_to_end(ways)
        finally:
            handoff.cancel()
            self._joined.discard(joined)

    def stop(self) -> None:
        """Tell every joined client to leave (its open calls finish)."""
        for joined in list(self._joined):
            joined.tell_to_leave()

    async def closed(self, timeout: float) -> None:
        """Wait for the connections to end, at most `timeout` seconds; then end them."""
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=timeout)
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _leave(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last_words: bytes
) -> None:
    """Send the activator's last frames and the end of its stream, then read what the client
    still sends until it closes (LINGER_SECONDS at most): a socket closed with bytes unread is
    reset, and a reset can reach the client before the last frames do."""
    writer.write(last_words)
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(LINGER_SECONDS):
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            while await reader.read(READ_SIZE):
                pass


async def _read_on(reader: asyncio.StreamReader, opening: h2.Opening) -> None:
    """Keep what the client sends until it leaves (returns) or sends too much (raises)."""
    while data := await reader.read(READ_SIZE):
        opening.feed(data)


async def _to_pod(
    reader: asyncio.StreamReader, opening: h2.Opening, pod: asyncio.StreamWriter
) -> None:
    while data := await reader.read(READ_SIZE):
        if opening.passing:
            pod.write(data)
        else:
            opening.feed(data)
            pod.write(opening.take())
        await pod.drain()


async def _to_client(pod: asyncio.StreamReader, joined: _Joined) -> None:
    while data := await pod.read(READ_SIZE):
        joined.client.write(joined.passed(data))
        await joined.client.drain()


async def _first_to_end(ways: list[asyncio.Task[None]]) -> None:
    """Both ways of a joined connection until either end closes: then the other is closed too
    (HTTP/2 has no half-closed connection)."""
    try:
        await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for way in ways:
            way.cancel()
    for way in ways:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, h2.ProtocolError):
            await way
