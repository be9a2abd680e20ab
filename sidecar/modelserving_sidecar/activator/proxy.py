"""Passing a request to a serving's pod and its answer back, as they are: the method, the path
and query as sent, the headers but the hop-by-hop ones (x-request-id, traceparent and tracestate
among those kept), the body; the answer's status, headers and body untouched (not even
decompressed).

A connection the pod refuses is NotSent: nothing of the request left, so it may go again (a
pod marked ready whose port is not open yet, as Knative's activator probes for before it
forwards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

# RFC 9110 7.6.1's, and those of older proxies; a hop's own, never passed on.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The body is passed whole, so its length is computed again; and it has been read, so an
# `Expect: 100-continue` was already answered here.
_NOT_ON_REQUEST = HOP_BY_HOP | {"content-length", "expect"}
_NOT_ON_ANSWER = HOP_BY_HOP | {"content-length"}


class NotSent(Exception):
    """The pod refused the connection (or could not be reached): nothing was sent."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes


def passed_headers(headers: Mapping[str, str], left_out: frozenset[str]) -> CIMultiDict[str]:
    """The headers without `left_out` and without those the Connection header names."""
    named = {
        token.strip().lower()
        for value in _all(headers, "Connection")
        for token in value.split(",")
        if token.strip()
    }
    return CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in left_out and k.lower() not in named
    )


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [value] if value is not None else []


def pod_url(address: str, port: int, raw_path: str) -> URL:
    """The pod's URL for a request's path and query, as the caller encoded them."""
    host = f"[{address}]" if ":" in address else address
    return URL(f"http://{host}:{port}{raw_path}", encoded=True)


async def forward(
    session: aiohttp.ClientSession,
    url: URL,
    method: str,
    headers: Mapping[str, str],
    body: bytes,
) -> Answer:
    """The request to the pod and its whole answer; NotSent when the pod's port refused it."""
    try:
        async with session.request(
            method,
            url,
            headers=passed_headers(headers, _NOT_ON_REQUEST),
            data=body if body else None,
            allow_redirects=False,
        ) as resp:
            return Answer(
                resp.status, passed_headers(resp.headers, _NOT_ON_ANSWER), await resp.read()
            )
    except aiohttp.ClientConnectorError as exc:
        raise NotSent(str(exc)) from exc


def pod_session(connections: int) -> aiohttp.ClientSession:
    """The session requests go to pods through: no cookies kept (one caller's would go to the
    next), no headers of its own added, nothing decompressed, keep-alive to each pod."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        # The sidecar bounds a model's time (504); a pod that accepts and never answers is a
        # pod the kubelet will restart. Only connecting has a bound here.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
    )
