"""The way to TF Serving: the request body read under the size limit, and one keep-alive connection
pool that forwards it and brings TF Serving's answer back as it came.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from modelserving.sidecar.config import UpstreamConfig
from modelserving.sidecar.errors import SidecarError

log = logging.getLogger(__name__)

_MAX_CACHED_URLS = 1024


class BodyTooLarge(SidecarError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than the limit of {limit} bytes")


async def read_body(request: web.Request, limit: int) -> bytes:
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

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._urls: dict[str, URL] = {}

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(self._base + path, encoded=True)  # the path is canonical already
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[path] = url
        return url

    async def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> UpstreamAnswer:
        """Send one request to TF Serving; its status and body come back untouched.

        Connection refused or dropped: 502; no connection in time: 503; no answer in time: 504.
        """
        url = self._url(path)
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                async with self._session.request(method, url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    content_type = resp.headers.get("Content-Type", "application/json")
                    return UpstreamAnswer(
                        resp.status, payload, content_type, time.perf_counter() - started
                    )
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection TF Serving had closed: inference has no side effects,
                # so one more try on a fresh connection is safe.
                if attempt == 2:
                    raise SidecarError(502, "TF Serving closed the connection") from None
            except aiohttp.ConnectionTimeoutError:
                raise SidecarError(503, "TF Serving did not accept a connection in time") from None
            except aiohttp.ClientConnectorError:
                raise SidecarError(
                    502, "TF Serving is not reachable (connection refused)"
                ) from None
            except TimeoutError:
                raise SidecarError(504, "TF Serving did not answer in time") from None
            except aiohttp.ClientError as exc:
                log.warning("TF Serving answered %s %s badly: %r", method, path, exc)
                raise SidecarError(502, "TF Serving's answer was broken off") from None
        raise AssertionError("unreachable")

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: UpstreamConfig) -> AsyncIterator[Upstream]:
        connector = aiohttp.TCPConnector(
            limit=config.max_connections,
            limit_per_host=config.max_connections,
            # Well under TF Serving's idle timeout, so a pooled connection is rarely a closed one.
            keepalive_timeout=15,
            use_dns_cache=True,
        )
        timeout = aiohttp.ClientTimeout(
            total=config.timeout_seconds, connect=config.connect_timeout_seconds
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            # Forward bytes as they come: no compression asked for, none undone, no cookies.
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        async with session:
            yield cls(session, config.url)
