"""A bare aiohttp reverse proxy: no auth, no log, no routes of its own. It is the floor of our
stack in the benchmark: the sidecar can only be slower than this by what auth and the log cost.

    python -m bench.baselines.aiohttp_proxy --port 8080 --upstream http://127.0.0.1:8501 [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

UPSTREAM_URL = web.AppKey("upstream_url", str)
SESSION = web.AppKey("session", ClientSession)
# Hop-by-hop and length headers the server sets itself for the answer.
_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "server"})


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    async with request.app[SESSION].request(
        request.method,
        request.app[UPSTREAM_URL] + request.rel_url.raw_path_qs,
        data=body,
        headers=headers,
    ) as upstream:
        payload = await upstream.read()
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
        return web.Response(body=payload, status=upstream.status, headers=out)


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM_URL] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=256, keepalive_timeout=300)
        async with ClientSession(connector=connector, timeout=ClientTimeout(total=60)) as s:
            app[SESSION] = s
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        create_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
