"""The sidecar's way to TF Serving over real sockets: a scripted HTTP server on 127.0.0.1 answers
each request as a test says (chunked, cut off, closed, late, ...), and the sidecar's `Upstream`
must bring back TF Serving's answer untouched or the right error of its own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from modelserving_sidecar.config import UpstreamConfig
from modelserving_sidecar.errors import SidecarError
from modelserving_sidecar.upstream import connections as upstream_connections
from modelserving_sidecar.upstream.proxy import Upstream

PATH = "/v1/models/m:predict"
BODY = b'{"instances": [1.0, 2.0]}'
ANSWER = b'{"predictions": [2.5, 3.0]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)


class Request:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body
        lines = head.decode("latin-1").split("\r\n")
        self.line = lines[0]
        self.headers = dict(line.split(": ", 1) for line in lines[1:] if line)


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "ScriptedServer"], Awaitable[None]]


class ScriptedServer:
    """Runs `script` for each connection; keeps every request it read and counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.connections = 0
        self.open_now = 0
        self.most_open = 0

    async def read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        request = Request(head, b"")
        length = int(request.headers.get("Content-Length", "0"))
        request.body = await reader.readexactly(length) if length else b""
        self.requests.append(request)
        return request

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await self.script(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[tuple[ScriptedServer, str]]:
    server = ScriptedServer(script)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def upstream(url: str, **settings) -> AsyncIterator[Upstream]:
    config = UpstreamConfig(
        url=url,
        timeout_seconds=settings.get("timeout", 2.0),
        connect_timeout_seconds=settings.get("connect_timeout", 1.0),
        max_connections=settings.get("max_connections", 8),
    )
    async with Upstream.running(config) as running:
        yield running


async def answer_each(answer: bytes, server: ScriptedServer, reader, writer) -> None:
    while await server.read_request(reader) is not None:
        writer.write(answer)
        await writer.drain()


def keep_answering(answer: bytes) -> Script:
    async def script(reader, writer, server):
        await answer_each(answer, server, reader, writer)

    return script


async def expect_error(running: Upstream, status: int, words: str) -> None:
    with pytest.raises(SidecarError) as raised:
        await running.forward("POST", PATH, BODY, request_id="rid-1")
    assert raised.value.status == status
    assert words in raised.value.message


# --- answers come back as TF Serving sent them ---------------------------------------------------


async def test_request_goes_out_with_only_the_headers_tf_serving_needs():
    async with scripted(keep_answering(OK)) as (server, url), upstream(url) as running:
        answer = await running.forward("POST", PATH, BODY, request_id="rid-1")
    assert (answer.status, answer.body, answer.content_type) == (200, ANSWER, "application/json")
    sent = server.requests[0]
    assert sent.line == f"POST {PATH} HTTP/1.1"
    assert sent.headers == {
        "Host": url.removeprefix("http://"),
        "X-Request-Id": "rid-1",
        "Content-Type": "application/json",
        "Content-Length": str(len(BODY)),
    }
    assert sent.body == BODY


async def test_chunked_answer_is_joined():
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\n" + ANSWER[:5] + b"\r\n" + b"%x\r\n" % (len(ANSWER) - 5) + ANSWER[5:] + b"\r\n"
        b"0\r\n\r\n"
    )

    async def slowly(reader, writer, server):
        while await server.read_request(reader) is not None:
            for i in range(0, len(chunked), 7):  # in many small TCP writes
                writer.write(chunked[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.001)

    async with scripted(slowly) as (server, url), upstream(url) as running:
        first = await running.forward("POST", PATH, BODY)
        second = await running.forward("POST", PATH, BODY)
    assert first.body == second.body == ANSWER
    assert server.connections == 1  # the chunked answer ended cleanly: the connection was kept


async def test_body_until_close_without_length():
    async def close_delimited(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + ANSWER)

    async with scripted(close_delimited) as (_, url), upstream(url) as running:
        answer = await running.forward("POST", PATH, BODY)
    assert (answer.status, answer.body) == (200, ANSWER)


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_tf_serving_errors_pass_through_unchanged(status):
    body = b'{"error": "Servable not found for request: Latest(m)"}'
    answer = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    script = keep_answering(answer % (status, len(body), body))
    async with scripted(script) as (_, url), upstream(url) as running:
        got = await running.forward("POST", PATH, BODY)
    assert (got.status, got.body) == (status, body)


async def test_interim_100_continue_is_skipped():
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with scripted(keep_answering(interim + OK)) as (_, url), upstream(url) as running:
        answer = await running.forward("POST", PATH, BODY)
    assert (answer.status, answer.body) == (200, ANSWER)


async def test_large_body_is_sent_whole():
    big = b"[" + b"1.0," * 100_000 + b"1.0]"
    async with scripted(keep_answering(OK)) as (server, url), upstream(url) as running:
        await running.forward("POST", PATH, big)
    assert server.requests[0].body == big


async def test_content_type_that_could_break_the_header_is_replaced():
    async with scripted(keep_answering(OK)) as (server, url), upstream(url) as running:
        await running.forward("POST", PATH, BODY, content_type="text/plain\r\nX-Evil: 1")
    assert server.requests[0].headers["Content-Type"] == "application/json"
    assert "X-Evil" not in server.requests[0].headers


# --- kept-alive connections ----------------------------------------------------------------------


async def test_connections_are_kept_and_bounded():
    async def slow(reader, writer, server):
        while await server.read_request(reader) is not None:
            await asyncio.sleep(0.02)
            writer.write(OK)

    async with scripted(slow) as (server, url), upstream(url, max_connections=2) as running:
        answers = await asyncio.gather(*(running.forward("POST", PATH, BODY) for _ in range(10)))
    assert all(a.status == 200 for a in answers)
    assert server.connections == 2
    assert server.most_open == 2


async def test_connection_close_from_tf_serving_is_honoured():
    closing = OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type")

    async def answer_once(reader, writer, server):
        await server.read_request(reader)
        writer.write(closing)

    async with scripted(answer_once) as (server, url), upstream(url) as running:
        for _ in range(3):
            assert (await running.forward("POST", PATH, BODY)).status == 200
    assert server.connections == 3


async def test_stale_kept_alive_connection_is_retried_once_on_a_new_one():
    async def first_connection_goes_stale(reader, writer, server):
        if server.connections == 1:
            await server.read_request(reader)
            writer.write(OK)
            await writer.drain()
            await server.read_request(reader)  # the next request is read, then dropped unanswered
            return
        await answer_each(OK, server, reader, writer)

    async with scripted(first_connection_goes_stale) as (server, url), upstream(url) as running:
        assert (await running.forward("POST", PATH, BODY)).status == 200
        assert (await running.forward("POST", PATH, BODY)).status == 200
    assert server.connections == 2
    assert len(server.requests) == 3


async def test_idle_connection_closed_by_tf_serving_is_not_used_again():
    async def answer_then_close(reader, writer, server):
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()  # and close, as TF Serving does after its idle timeout

    async with scripted(answer_then_close) as (server, url), upstream(url) as running:
        for _ in range(3):
            assert (await running.forward("POST", PATH, BODY)).status == 200
            await asyncio.sleep(0.05)
    assert server.connections == 3
    assert len(server.requests) == 3  # no request was sent into a closed connection


async def test_new_connection_closed_unanswered_is_502_without_retry():
    async def drop(reader, writer, server):
        await server.read_request(reader)

    async with scripted(drop) as (server, url), upstream(url) as running:
        await expect_error(running, 502, "closed the connection")
    assert server.connections == 1


async def test_answer_cut_off_mid_body_is_502():
    async def cut(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + ANSWER[:10])

    async with scripted(cut) as (_, url), upstream(url) as running:
        await expect_error(running, 502, "broken off")


async def test_chunked_answer_cut_off_is_502():
    async def cut(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + ANSWER)

    async with scripted(cut) as (_, url), upstream(url) as running:
        await expect_error(running, 502, "broken off")


async def test_answer_that_is_not_http_is_502_and_the_connection_dropped():
    async def garbage_first(reader, writer, server):
        await server.read_request(reader)
        if server.connections == 1:
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
            await reader.read()  # held open until the sidecar drops it
            return
        writer.write(OK)
        await answer_each(OK, server, reader, writer)

    async with scripted(garbage_first) as (server, url), upstream(url) as running:
        await expect_error(running, 502, "broken off")
        assert (await running.forward("POST", PATH, BODY)).status == 200
    assert server.connections == 2


async def test_answer_larger_than_the_cap_is_502(monkeypatch):
    monkeypatch.setattr(upstream_connections, "MAX_ANSWER_BYTES", 1000)

    async def endless(reader, writer, server):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100):
            writer.write(b"x" * 1000)
            await writer.drain()

    async with scripted(endless) as (_, url), upstream(url) as running:
        await expect_error(running, 502, "broken off")


# --- TF Serving down or slow ---------------------------------------------------------------------


async def test_no_answer_in_time_is_504_and_the_late_answer_is_not_taken_for_the_next():
    late_answer_sent = asyncio.Event()

    async def late_then_fast(reader, writer, server):
        await server.read_request(reader)
        if server.connections == 1:
            await asyncio.sleep(0.5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            await writer.drain()
            late_answer_sent.set()
            await reader.read()  # held open until the sidecar drops it
            return
        writer.write(OK)
        await answer_each(OK, server, reader, writer)

    async with scripted(late_then_fast) as (server, url), upstream(url, timeout=0.2) as running:
        await expect_error(running, 504, "did not answer in time")
        await asyncio.wait_for(late_answer_sent.wait(), 5)
        answer = await running.forward("POST", PATH, BODY)
    assert answer.body == ANSWER
    assert server.connections == 2


async def test_waiting_for_a_free_connection_counts_against_the_deadline():
    async def slow(reader, writer, server):
        await server.read_request(reader)
        await reader.read()  # no answer: held until the sidecar gives up and drops it

    one_connection = {"timeout": 0.2, "max_connections": 1}
    async with scripted(slow) as (_, url), upstream(url, **one_connection) as running:
        results = await asyncio.gather(
            *(running.forward("POST", PATH, BODY) for _ in range(3)), return_exceptions=True
        )
    assert [(type(r), r.status) for r in results] == [(SidecarError, 504)] * 3  # type: ignore[union-attr]


async def test_connection_refused_is_502():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        async with upstream(f"http://127.0.0.1:{port}") as running:
            await expect_error(running, 502, "not reachable")


async def test_no_connection_accepted_in_time_is_503():
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        async with upstream(f"http://127.0.0.1:{port}", connect_timeout=0.3) as running:
            await expect_error(running, 503, "did not accept a connection in time")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_upstream_url_must_be_plain_http():
    from modelserving_sidecar.config import ConfigError

    with pytest.raises(ConfigError, match=r"upstream\.url"):
        async with upstream("https://127.0.0.1:8501"):
            pass
