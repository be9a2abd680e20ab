"""Kubernetes tokens at the sidecar (modelserving.sidecar.kubernetes_auth) against a stand-in API
server: a review that fails says so without any token in the log or the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelserving.kube_access import ApiServer, BearerToken
from modelserving.sidecar.auth import AuthUnavailable
from modelserving.sidecar.config import parse_config
from modelserving.sidecar.kubernetes_auth import KubernetesAuthenticator

OUR_TOKEN = "sidecar-service-account-token"
CALLERS_TOKEN = "callers-secret-token"
CONFIG = parse_config(
    {
        "serving": {"name": "hpt", "namespace": "ns"},
        "model": {"name": "hpt", "version": 1, "modelId": 1},
        "auth": {"mode": "kubernetes"},
    }
)
Answer = Callable[[web.Request], web.StreamResponse]


@pytest_asyncio.fixture
async def api_server() -> AsyncIterator[tuple[list[Answer], list[str], KubernetesAuthenticator]]:
    """A stand-in API server answering with the test's function (it records the paths asked),
    and an authenticator asking it."""
    answers: list[Answer] = []
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        return answers[0](request)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    async with TestServer(app) as server:
        url = str(server.make_url("")).rstrip("/")
        api = ApiServer(url, False, BearerToken(lambda: OUR_TOKEN, None))
        async with KubernetesAuthenticator.running(CONFIG, api) as authenticator:
            answers.append(lambda _: web.Response(status=500))
            yield answers, asked, authenticator


def redirect_to_itself(request: web.Request) -> web.StreamResponse:
    raise web.HTTPTemporaryRedirect(request.path)


def not_json(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>a proxy's page</html>", content_type="text/html")


def echoing_the_review(request: web.Request) -> web.StreamResponse:
    return web.Response(
        status=500, text=f'{{"spec": {{"token": "{CALLERS_TOKEN}"}}, "auth": "Bearer {OUR_TOKEN}"}}'
    )


@pytest.mark.parametrize("answer", [redirect_to_itself, not_json, echoing_the_review])
async def test_a_failed_review_leaves_no_token_in_the_log_or_the_answer(api_server, caplog, answer):
    answers, asked, authenticator = api_server
    answers[0] = answer
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthUnavailable) as refused:
        await authenticator.authenticate(f"Bearer {CALLERS_TOKEN}")
    assert refused.value.status == 503
    said = [refused.value.message, str(refused.value), repr(refused.value), caplog.text]
    said += [r.getMessage() for r in caplog.records]
    for text in said:
        assert OUR_TOKEN not in text and CALLERS_TOKEN not in text
    assert "TokenReview" in caplog.text  # the log still says which call failed
    assert asked == ["/apis/authentication.k8s.io/v1/tokenreviews"]  # a redirect is not followed
