"""Kubernetes tokens at the sidecar (modelserving_sidecar.auth.kubernetes_tokens) against a
stand-in API server: a review that fails says so without any token in the log or the answer,
and an allowed token is not let in on the cached decision once it has expired."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelserving.kube_access import ApiServer, BearerToken
from modelserving_sidecar.auth.authenticator import AuthUnavailable
from modelserving_sidecar.auth.kubernetes_tokens import KubernetesAuthenticator
from modelserving_sidecar.config import parse_config

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


TOKEN_REVIEW = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEW = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def authenticated_then(answer: Answer) -> Answer:
    """The TokenReview says the token is good; the SubjectAccessReview gets `answer`."""

    def answering(request: web.Request) -> web.StreamResponse:
        if request.path == TOKEN_REVIEW:
            user = {"username": "system:serviceaccount:ns:caller"}
            return web.json_response({"status": {"authenticated": True, "user": user}})
        return answer(request)

    return answering


@pytest.mark.parametrize(
    ("answer", "failed", "asked"),
    [
        (redirect_to_itself, "TokenReview", [TOKEN_REVIEW]),  # a redirect is not followed
        (
            authenticated_then(redirect_to_itself),
            "SubjectAccessReview",
            [TOKEN_REVIEW, ACCESS_REVIEW],
        ),
        (not_json, "TokenReview", [TOKEN_REVIEW]),
        (echoing_the_review, "TokenReview", [TOKEN_REVIEW]),
    ],
    ids=["redirect-loop", "access-review-redirect-loop", "not-json", "echoing-the-tokens"],
)
async def test_a_failed_review_leaves_no_token_in_the_log_or_the_answer(
    api_server, caplog, answer, failed, asked
):
    answers, seen, authenticator = api_server
    answers[0] = answer
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthUnavailable) as refused:
        await authenticator.authenticate(f"Bearer {CALLERS_TOKEN}")
    assert refused.value.status == 503
    said = [refused.value.message, str(refused.value), repr(refused.value), caplog.text]
    said += [r.getMessage() for r in caplog.records]
    for text in said:
        assert OUR_TOKEN not in text and CALLERS_TOKEN not in text
    assert failed in caplog.text  # the log still says which call failed
    assert seen == asked


# An allowed token is let in without asking again for allowCacheSeconds, never past its expiry.


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwt(payload: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(payload)}.c2lnbmF0dXJl"


async def allowing(request: web.Request) -> web.StreamResponse:
    if request.path.endswith("/tokenreviews"):
        user = {"username": "system:serviceaccount:ns:caller"}
        return web.json_response({"status": {"authenticated": True, "user": user}}, status=201)
    return web.json_response({"status": {"allowed": True}}, status=201)


@pytest_asyncio.fixture
async def allowing_api() -> AsyncIterator[tuple[KubernetesAuthenticator, Clock]]:
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", allowing)
    clock = Clock()
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("")).rstrip("/")
        api = ApiServer(url, False, BearerToken(lambda: OUR_TOKEN, None))
        yield KubernetesAuthenticator(session, api, CONFIG, clock=clock), clock


async def reviews_after(
    authenticator: KubernetesAuthenticator, clock: Clock, token: str, seconds: float
) -> int:
    """The reviews sent for a token let in once, then again `seconds` later."""
    before = authenticator.api_calls
    assert await authenticator.authenticate(f"Bearer {token}") == "system:serviceaccount:ns:caller"
    clock.now += seconds
    await authenticator.authenticate(f"Bearer {token}")
    return authenticator.api_calls - before


def expiring_in(seconds: float) -> Callable[[], str]:
    return lambda: jwt({"sub": "caller", "exp": time.time() + seconds})


@pytest.mark.parametrize(
    ("token", "cached_for"),
    [
        (expiring_in(60), 60),  # expires before the cache time
        (expiring_in(3600), 300),  # after it: the cache time
        (lambda: jwt({"sub": "caller"}), 300),  # a JWT that does not expire
        (lambda: jwt({"exp": "soon"}), 300),  # nor one whose exp is not a time
        (lambda: "a.b%.c", 300),  # nor a token that looks like a JWT and is not
        (lambda: "an-opaque-token", 300),  # a token that is not a JWT: the configured time
    ],
    ids=["jwt-60s", "jwt-1h", "jwt-no-exp", "jwt-bad-exp", "jwt-like", "opaque"],
)
async def test_an_allowed_token_is_cached_for_the_allow_time_and_never_past_its_expiry(
    allowing_api, token, cached_for
):
    authenticator, clock = allowing_api
    assert CONFIG.auth.allow_cache_seconds == 300
    assert await reviews_after(authenticator, clock, token(), cached_for - 2) == 1
    assert await reviews_after(authenticator, clock, token() + "x", cached_for + 1) == 2


async def test_a_token_allowed_as_it_expires_is_not_cached(allowing_api):
    authenticator, clock = allowing_api
    token = jwt({"sub": "caller", "exp": time.time() - 1})  # the API server's clock is behind
    assert await reviews_after(authenticator, clock, token, 0) == 2
