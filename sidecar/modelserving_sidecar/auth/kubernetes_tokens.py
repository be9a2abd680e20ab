"""Kubernetes bearer tokens: TokenReview (with the pinned audience) then SubjectAccessReview for
`create` on `modelservings/predict` of this serving, through async calls to the API server.

Decisions are cached by a hash of the token (allow and deny for their own times, an allow never
past the token's expiry), errors never are, and concurrent checks of one token share one pair of
API calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelserving.api import GROUP, PLURAL, PREDICT_SUBRESOURCE
from modelserving.kube_access import ApiServer, from_environment
from modelserving_sidecar.auth.authenticator import (
    READY,
    AuthHealth,
    AuthUnavailable,
    Forbidden,
    Unauthenticated,
    challenge,
    credential,
)
from modelserving_sidecar.config import AuthMode, SidecarConfig

log = logging.getLogger(__name__)

SCHEME = "Bearer"
# The 401's message when no token is sent (the activator's refusal before a wake says it too).
TOKEN_REQUIRED = "A Kubernetes token is required: Authorization: Bearer <token>"
API_TIMEOUT_SECONDS = 5.0
MAX_CACHED_DECISIONS = 10_000


@dataclass(frozen=True, slots=True)
class Decision:
    """The API server's answer about one token, as cached."""

    authenticated: bool
    allowed: bool
    caller: str | None
    expires: float


class KubernetesAuthenticator:
    """auth.mode kubernetes: the caller is the token's user name."""

    mode = AuthMode.KUBERNETES.value

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api: ApiServer,
        config: SidecarConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._clock = clock
        self._api = api
        self._challenge = challenge(SCHEME, config)
        self._audience = config.auth.audience
        self._allow_seconds = config.auth.allow_cache_seconds
        self._deny_seconds = config.auth.deny_cache_seconds
        self._resource = {
            "namespace": config.serving.namespace,
            "verb": "create",
            "group": GROUP,
            "resource": PLURAL,
            "subresource": PREDICT_SUBRESOURCE,
            "name": config.serving.name,
        }
        self._cache: dict[bytes, Decision] = {}
        self._in_flight: dict[bytes, asyncio.Future[Decision]] = {}
        self.api_calls = 0  # reviews sent to the API server, for tests and metrics

    def health(self) -> AuthHealth:
        return READY  # the review client is built: the API server's answers say the rest

    async def authenticate(self, authorization: str | None) -> str | None:
        token = credential(authorization, SCHEME)
        if token is None:
            raise Unauthenticated(self._challenge, TOKEN_REQUIRED)
        key = hashlib.sha256(token.encode("utf-8", "backslashreplace")).digest()
        decision = self._cache.get(key)
        if decision is None or decision.expires <= self._clock():
            decision = await self._shared_review(key, token)
        if not decision.authenticated:
            raise Unauthenticated(self._challenge, "The token is not valid for this serving")
        if not decision.allowed:
            raise Forbidden(
                f"{decision.caller} may not create {PLURAL}/{PREDICT_SUBRESOURCE} "
                f"{self._resource['name']} in namespace {self._resource['namespace']}"
            )
        return decision.caller

    async def _shared_review(self, key: bytes, token: str) -> Decision:
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._review(key, token))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda done: self._review_finished(key, done))
        # A caller that goes away must not cancel the review the others are waiting for.
        return await asyncio.shield(pending)

    def _review_finished(self, key: bytes, done: asyncio.Future[Decision]) -> None:
        self._in_flight.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here too, in case every waiter has gone

    async def _review(self, key: bytes, token: str) -> Decision:
        self.api_calls += 1
        spec: dict[str, Any] = {"token": token}
        if self._audience:
            spec["audiences"] = [self._audience]
        review = await self._post(
            "/apis/authentication.k8s.io/v1/tokenreviews", "TokenReview", spec
        )
        status = review.get("status") or {}
        user = status.get("user") or {}
        username = user.get("username")
        audience_ok = not self._audience or self._audience in (status.get("audiences") or [])
        if not (status.get("authenticated") and username and audience_ok):
            return self._remember(key, Decision(False, False, None, self._deny_seconds))
        access = await self._post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            "SubjectAccessReview",
            {
                "user": username,
                "uid": user.get("uid", ""),
                "groups": user.get("groups") or [],
                "extra": user.get("extra") or {},
                "resourceAttributes": self._resource,
            },
        )
        allowed = bool((access.get("status") or {}).get("allowed"))
        if allowed:
            # TokenReview does not say when the token expires; a JWT's payload does. Read
            # unverified, it can only shorten the time (the API server has just verified it).
            expiry = token_expiry(token)
            left = self._allow_seconds if expiry is None else expiry - time.time()
            seconds = max(0.0, min(self._allow_seconds, left))
        else:
            seconds = self._deny_seconds
        return self._remember(key, Decision(True, allowed, username, seconds))

    def _remember(self, key: bytes, decision: Decision) -> Decision:
        decision = Decision(
            decision.authenticated,
            decision.allowed,
            decision.caller,
            self._clock() + decision.expires,
        )
        if len(self._cache) >= MAX_CACHED_DECISIONS:
            now = self._clock()
            for stale in [k for k, d in self._cache.items() if d.expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_CACHED_DECISIONS:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = decision
        return decision

    async def _post(self, path: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        group_version = path.split("/")[2] + "/v1"
        body = {"apiVersion": group_version, "kind": kind, "spec": spec}
        headers = await self._api.headers()
        try:
            # Never redirected: the API server does not redirect reviews, and a redirect followed
            # would carry our token and the caller's (in the body) to wherever it points.
            async with self._session.post(
                self._api.url + path, json=body, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status not in (200, 201):
                    text = _without_secrets((await resp.text())[:300], spec, headers)
                    log.error("%s refused by the API server: %s %s", kind, resp.status, text)
                    raise AuthUnavailable(f"The credential cannot be checked now ({kind} failed)")
                answer: dict[str, Any] = await resp.json()
                return answer
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("%s could not reach the API server: POST %s: %s", kind, path, _failure(exc))
            raise AuthUnavailable(
                "The credential cannot be checked now (Kubernetes API unreachable)"
            ) from None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, config: SidecarConfig, api: ApiServer | None = None
    ) -> AsyncIterator[KubernetesAuthenticator]:
        if api is None:
            api = await asyncio.to_thread(from_environment, config.auth.kubeconfig)
        connector = aiohttp.TCPConnector(ssl=api.ssl_context, limit=32)
        timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            log.info(
                "Kubernetes auth: reviews go to %s (audience %r)", api.url, config.auth.audience
            )
            yield cls(session, api, config)


def token_expiry(token: str) -> float | None:
    """When a token that is a JWT expires (its payload's `exp`, in seconds since the epoch),
    unverified; None when it is not a JWT or says no expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):  # UnicodeDecodeError included
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _failure(exc: BaseException) -> str:
    """What went wrong with a review's request, for the log: the error's class and, for an
    answer, its status. Never the error's text or repr: aiohttp's response errors carry the
    request's headers (our bearer token) and its history."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__} (status {exc.status})"
    return type(exc).__name__


def _without_secrets(text: str, spec: dict[str, Any], headers: dict[str, str]) -> str:
    """An API server's answer, for the log, with the tokens of the request blanked out in case
    it echoes them (a TokenReview's answer holds its spec)."""
    secrets = [spec.get("token"), headers.get("Authorization", "").partition(" ")[2]]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
