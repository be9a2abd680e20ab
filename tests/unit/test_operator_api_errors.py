"""What the operator says of a request that failed names the method, the path and the error,
never the request's headers: the bearer token must not reach Events, status or logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelserving.kube_access import ApiServer, BearerToken
from modelserving_operator.kube import KubeClient, KubeError

TOKEN = "sekret-token-of-the-operator"


@pytest_asyncio.fixture
async def redirect_loop() -> AsyncIterator[str]:
    """An API server whose every answer sends the client back to the same URL."""

    async def again(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.rel_url))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", again)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_a_redirect_loop_is_told_without_the_token(
    redirect_loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: the error aiohttp raises here carries the request's headers, the token among them
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.TooManyRedirects) as raw:
            await session.get(
                f"{redirect_loop}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}
            )
    assert TOKEN in repr(raw.value)

    # When the operator's client makes a request to that API server
    kube = KubeClient(ApiServer(redirect_loop, False, BearerToken(lambda: TOKEN, None)), 1, 5.0)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(KubeError) as refused:
            await kube.get("Deployment", "mnist", "team-a")
    finally:
        await kube.close()

    # Then its error says the method, the path and what went wrong, and holds no token
    error = refused.value
    path = "/apis/apps/v1/namespaces/team-a/deployments/mnist"
    assert error.status == 0
    assert error.message == f"GET {path}: TooManyRedirects"
    logging.getLogger("test").exception("reconciling failed", exc_info=error)
    for text in (str(error), repr(error), caplog.text):
        assert TOKEN not in text
