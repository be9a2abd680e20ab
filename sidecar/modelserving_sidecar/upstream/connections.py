"""Kept-alive HTTP/1.1 connections to TF Serving on localhost, on asyncio's Protocol API.

aiohttp's ClientSession spent most of a proxied request's CPU (URL objects, multidicts, hooks, a
stream reader per answer); a localhost TF Serving needs none of that. Here a request goes out in
one write (request line, precomputed headers, body) and the answer is parsed by httptools
(llhttp, the parser of Node.js and uvicorn): status, Content-Type, a body by Content-Length,
chunks or close, and whether the connection may be kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import httptools

# Bodies up to this size are joined to the head and written at once; larger ones go out as two
# buffers rather than be copied.
_ONE_WRITE_BYTES = 64 * 1024
# An answer larger than this (head and body) is refused: a runaway upstream cannot take the
# sidecar's memory. Generous for TF Serving's JSON; a setting if a model ever needs more.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class Disconnected(Exception):
    """The connection closed before any byte of the answer came back."""

    def __init__(self, reused: bool) -> None:
        super().__init__("the connection closed before an answer")
        self.reused = reused  # a kept-alive connection: the server had most likely closed it idle


class BrokenAnswer(Exception):
    """The answer was not HTTP we can read, or it was cut off."""


class AnswerTimeout(TimeoutError):
    """No whole answer before the deadline."""


class ConnectTimeout(Exception):
    """No connection accepted before the connect timeout."""


class Unreachable(Exception):
    """The connection was refused (or failed otherwise at connect)."""


Answer = tuple[int, bytes, bytes | None]  # status, body, Content-Type


class UpstreamConnection(asyncio.Protocol):
    """One connection: at most one request in flight, its answer handed to a future."""

    __slots__ = (
        "_body",
        "_content_type",
        "_delimited",
        "_headers_done",
        "_loop",
        "_parser",
        "_pool",
        "_received",
        "_received_bytes",
        "_timer",
        "_waiter",
        "closed",
        "counted",
        "idle_since",
        "keep_alive",
        "reused",
        "transport",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []
        self._content_type: bytes | None = None
        self._received = False  # any byte of the current answer
        self._received_bytes = 0
        self._headers_done = False
        self._delimited = False  # Content-Length or chunked: the body does not end at close
        self.keep_alive = True
        self.closed = False
        self.reused = False  # has answered a request before
        self.counted = False  # in the pool's count of open connections
        self.idle_since = 0.0

    # ---------------------------------------------------------------- the request

    def send(self, head: bytes, body: bytes | None, deadline: float) -> asyncio.Future[Answer]:
        """Write one request; the future gets the answer, or the reason there is none."""
        self._waiter = waiter = self._loop.create_future()
        self._body = []
        self._content_type = None
        self._received = self._headers_done = self._delimited = False
        self._received_bytes = 0
        self._timer = self._loop.call_at(deadline, self._timed_out)
        transport = self.transport
        assert transport is not None
        if not body:
            transport.write(head)
        elif len(body) <= _ONE_WRITE_BYTES:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        return waiter

    def _finish(self, result: Answer | None, error: BaseException | None) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)  # type: ignore[arg-type]

    def _timed_out(self) -> None:
        self._timer = None
        # An answer may still come on this connection: it cannot carry another request.
        self.keep_alive = False
        self._finish(None, AnswerTimeout())
        self.close()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    # ---------------------------------------------------------------- asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the stream can no longer be followed.
            self.close()
            return
        self._received = True
        self._received_bytes += len(data)
        if self._received_bytes > MAX_ANSWER_BYTES:
            self._broken(f"TF Serving's answer is larger than {MAX_ANSWER_BYTES} bytes")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(f"TF Serving's answer is not valid HTTP: {exc}")
        except httptools.HttpParserUpgrade:
            self._broken("TF Serving switched protocols")

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        if self._waiter is not None:
            if not self._received:
                self._finish(None, Disconnected(self.reused))
            elif self._headers_done and not self._delimited:
                # Neither Content-Length nor chunked: the body is what came before the close.
                self._finish(self._answer(), None)
            else:
                self._finish(None, BrokenAnswer("TF Serving closed the connection mid-answer"))
        self._pool._lost(self)

    def _broken(self, why: str) -> None:
        self._finish(None, BrokenAnswer(why))
        self.close()

    # ---------------------------------------------------------------- httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        if size == 12 and name.lower() == b"content-type":
            self._content_type = value
        elif (size == 14 and name.lower() == b"content-length") or (
            size == 17 and name.lower() == b"transfer-encoding"
        ):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._body = []
            self._content_type = None
            self._headers_done = self._delimited = False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._finish(self._answer(), None)

    def _answer(self) -> Answer:
        body = self._body
        return (
            self._parser.get_status_code(),
            body[0] if len(body) == 1 else b"".join(body),
            self._content_type,
        )


class ConnectionPool:
    """Up to `max_connections` connections to one host, the most recently used taken first."""

    def __init__(
        self,
        host: str,
        port: int,
        max_connections: int,
        connect_timeout: float,
        idle_seconds: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self._idle: list[UpstreamConnection] = []
        self._open = 0  # connected or connecting
        self._waiters: collections.deque[asyncio.Future[UpstreamConnection | None]] = (
            collections.deque()
        )
        self._closing = False

    async def request(self, head: bytes, body: bytes | None, deadline: float) -> Answer:
        """One request on a pooled connection (a new one when none is idle)."""
        conn = await self._acquire(deadline)
        answered = False
        try:
            answer = await conn.send(head, body, deadline)
            answered = True
            return answer
        finally:
            if answered and conn.keep_alive and not conn.closed:
                self._release(conn)
            else:
                # Cancelled or failed mid-request: what may still arrive belongs to no one.
                conn.close()

    async def _acquire(self, deadline: float) -> UpstreamConnection:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if self.loop.time() - conn.idle_since > self.idle_seconds:
                conn.close()  # close to TF Serving's own idle timeout: likely closed there soon
                continue
            return conn
        while self._open >= self.max_connections:
            waiter: asyncio.Future[UpstreamConnection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    given = await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    # Handed a connection (or room for one) as we gave up: pass it on.
                    handed = waiter.result()
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._hand_over(None)
                if isinstance(exc, TimeoutError):
                    raise AnswerTimeout() from None
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if given is not None and not given.closed:
                return given
        return await self._connect(deadline)

    async def _connect(self, deadline: float) -> UpstreamConnection:
        self._open += 1
        timeout = min(self.connect_timeout, deadline - self.loop.time())
        try:
            async with asyncio.timeout(max(timeout, 0)):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except TimeoutError:
            self._gone()
            if timeout < self.connect_timeout:
                raise AnswerTimeout() from None  # the request's own deadline came first
            raise ConnectTimeout() from None
        except OSError as exc:
            self._gone()
            raise Unreachable(str(exc)) from None
        except BaseException:
            self._gone()
            raise
        if conn.closed:  # closed by the server before it could be used
            self._gone()
            raise Disconnected(reused=False)
        conn.counted = True
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        conn.reused = True
        if self._closing:
            conn.close()
            return
        if not self._hand_over(conn):
            conn.idle_since = self.loop.time()
            self._idle.append(conn)

    def _lost(self, conn: UpstreamConnection) -> None:
        if not conn.counted:
            return  # lost while connecting: _connect counts it
        conn.counted = False
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._gone()

    def _gone(self) -> None:
        self._open -= 1
        self._hand_over(None)  # room for one more connection: the first waiter opens it

    def _hand_over(self, conn: UpstreamConnection | None) -> bool:
        """Give a connection (None: room to open one) to the first request waiting, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        """Close every idle connection; those in use close when their request ends."""
        self._closing = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        # Let the transports' connection_lost run before the loop goes away.
        await asyncio.sleep(0)
