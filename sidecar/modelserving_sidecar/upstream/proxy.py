"""The way to TF Serving: the request body read under the size limit, and one keep-alive connection
pool that forwards it and brings TF Serving's answer back as it came.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from modelserving_sidecar.config import ConfigError, UpstreamConfig
from modelserving_sidecar.errors import JSON, SidecarError
from modelserving_sidecar.upstream.connections import (
    AnswerTimeout,
    BrokenAnswer,
    ConnectionPool,
    ConnectTimeout,
    Disconnected,
    Unreachable,
)

log = logging.getLogger(__name__)


class BodyTooLarge(SidecarError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than the limit of {limit} bytes")


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as more than `limit` bytes arrive.

    The count is of the bytes after aiohttp undoes a gzip/deflate Content-Encoding (in bounded
    pieces), so neither a false Content-Length nor a compression bomb gets past it.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    try:
        return await _read_limited(request.content, limit)
    except (web.RequestPayloadError, HttpProcessingError):  # bad gzip/deflate data, bad chunks
        raise SidecarError(400, "The request body cannot be read (bad encoding)") from None


async def _read_limited(content: StreamReader, limit: int) -> bytes:
    first = await content.readany()
    if content.at_eof():
        if len(first) > limit:
            raise BodyTooLarge(limit)
        return first
    chunks = [first]
    size = len(first)
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    status: int
    body: bytes
    content_type: str
    seconds: float


class Upstream:
    """TF Serving on localhost, reached through one pool of kept-alive connections."""

    def __init__(self, pool: ConnectionPool, base_path: str, host_header: str, timeout: float):
        self._pool = pool
        self._loop = pool.loop
        self._base = base_path.rstrip("/")
        self._host = f"Host: {host_header}\r\n".encode("ascii")
        self._timeout = timeout
        self._heads: dict[tuple[str, str], bytes] = {}

    def _head(self, method: str, path: str) -> bytes:
        """Request line and Host, precomputed per path (the path is canonical already)."""
        head = self._heads.get((method, path))
        if head is None:
            head = f"{method} {self._base}{path} HTTP/1.1\r\n".encode("ascii") + self._host
            if len(self._heads) < _MAX_CACHED_HEADS:
                self._heads[(method, path)] = head
        return head

    async def forward(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = JSON,
        request_id: str | None = None,
        timeout: float | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> UpstreamAnswer:
        """Send one request to TF Serving; its status and body come back untouched.

        Only Content-Type, X-Request-Id and the W3C trace context are passed on (never the
        caller's Authorization); the trace context's values are checked already
        (modelserving_sidecar.tracing.context).
        `timeout` replaces upstream.timeoutSeconds for this request. Connection refused: 502;
        no connection in time: 503; no answer in time: 504; a broken or cut-off answer: 502.
        """
        started = time.perf_counter()
        deadline = self._loop.time() + (self._timeout if timeout is None else timeout)
        head = self._head(method, path)
        if request_id is not None:
            head += b"X-Request-Id: " + request_id.encode("ascii") + b"\r\n"
        if traceparent is not None:
            head += b"traceparent: " + traceparent.encode("ascii") + b"\r\n"
            if tracestate is not None:
                head += b"tracestate: " + tracestate.encode("ascii") + b"\r\n"
        if body is not None:
            head += _CONTENT_TYPES.get(content_type) or _content_type_line(content_type)
            head += b"Content-Length: %d\r\n\r\n" % len(body)
        else:
            head += b"\r\n"
        for attempt in (1, 2):
            try:
                status, payload, answer_type = await self._pool.request(head, body, deadline)
            except Disconnected as exc:
                # A kept-alive connection TF Serving had closed: inference has no side effects,
                # so one more try on a fresh connection is safe.
                if exc.reused and attempt == 1:
                    continue
                raise SidecarError(502, "TF Serving closed the connection") from None
            except ConnectTimeout:
                raise SidecarError(503, "TF Serving did not accept a connection in time") from None
            except Unreachable:
                raise SidecarError(
                    502, "TF Serving is not reachable (connection refused)"
                ) from None
            except AnswerTimeout:
                raise SidecarError(504, "TF Serving did not answer in time") from None
            except BrokenAnswer as exc:
                log.warning("TF Serving answered %s %s badly: %s", method, path, exc)
                raise SidecarError(502, "TF Serving's answer was broken off") from None
            return UpstreamAnswer(
                status,
                payload,
                _decoded_type(answer_type),
                time.perf_counter() - started,
            )
        raise AssertionError("unreachable")

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: UpstreamConfig) -> AsyncIterator[Upstream]:
        url = urlsplit(config.url)
        if url.scheme != "http" or not url.hostname:
            raise ConfigError(f"upstream.url: {config.url!r} is not an http://host:port URL")
        port = url.port or 80
        pool = ConnectionPool(
            url.hostname,
            port,
            max_connections=config.max_connections,
            connect_timeout=config.connect_timeout_seconds,
            # Well under TF Serving's idle timeout, so a pooled connection is rarely a closed one.
            idle_seconds=15.0,
        )
        try:
            yield cls(pool, url.path, url.netloc, config.timeout_seconds)
        finally:
            await pool.close()


_MAX_CACHED_HEADS = 1024
# Visible ASCII and space: a Content-Type with anything else is replaced, not forwarded.
_SAFE_HEADER_VALUE = frozenset(chr(c) for c in range(0x20, 0x7F))


def _content_type_line(value: str) -> bytes:
    if not _SAFE_HEADER_VALUE.issuperset(value):
        return _CONTENT_TYPES[JSON]  # nothing that could end the header line goes through
    line = b"Content-Type: " + value.encode("ascii") + b"\r\n"
    if len(_CONTENT_TYPES) < _MAX_CACHED_HEADS:
        _CONTENT_TYPES[value] = line
    return line


_CONTENT_TYPES: dict[str, bytes] = {JSON: b"Content-Type: application/json\r\n"}
_ANSWER_TYPES: dict[bytes | None, str] = {None: JSON}


def _decoded_type(raw: bytes | None) -> str:
    decoded = _ANSWER_TYPES.get(raw)
    if decoded is None:
        decoded = raw.decode("latin-1")  # type: ignore[union-attr]
        if len(_ANSWER_TYPES) < _MAX_CACHED_HEADS:
            _ANSWER_TYPES[raw] = decoded
    return decoded
