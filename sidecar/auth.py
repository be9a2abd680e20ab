"""Who may call a serving: the authenticator chosen by `auth.mode` (API keys, Kubernetes tokens or
none), and the refusals it answers with (401 no or bad credential, 403 not allowed, 503 unsure).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from modelserving.sidecar.config import AuthMode, SidecarConfig
from modelserving.sidecar.errors import SidecarError

log = logging.getLogger(__name__)


class Unauthenticated(SidecarError):
    """No credential, or one that proves nothing: 401 with the scheme to use."""

    def __init__(self, challenge: str, message: str) -> None:
        super().__init__(401, message, {"WWW-Authenticate": challenge})


class Forbidden(SidecarError):
    """The caller is known and not allowed to call this serving: 403."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


class AuthUnavailable(SidecarError):
    """The check itself could not be made (API server unreachable): 503, never a refusal."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class Authenticator(Protocol):
    mode: str

    async def authenticate(self, authorization: str | None) -> str | None:
        """The caller's name (never the credential) from an Authorization header, or raise."""
        ...


def credential(authorization: str | None, scheme: str) -> str | None:
    """The credential of an `Authorization: <scheme> <credential>` header, when it has that form."""
    if authorization is None:
        return None
    given, _, value = authorization.partition(" ")
    value = value.strip()
    if given.lower() != scheme.lower() or not value:
        return None
    return value


def challenge(scheme: str, config: SidecarConfig) -> str:
    return f'{scheme} realm="{config.serving.namespace}/{config.serving.name}"'


class NoAuthenticator:
    """auth.mode none: every caller is let in, unnamed."""

    mode = AuthMode.NONE.value

    async def authenticate(self, authorization: str | None) -> str | None:
        return None


@asynccontextmanager
async def open_authenticator(config: SidecarConfig) -> AsyncIterator[Authenticator]:
    """The serving's authenticator, running (key reloads, API sessions) for the app's lifetime."""
    mode = config.auth.mode
    if mode is AuthMode.NONE:
        log.warning(
            "auth.mode is none: ModelServing %s/%s answers anyone without a credential",
            config.serving.namespace,
            config.serving.name,
        )
        yield NoAuthenticator()
    elif mode is AuthMode.API_KEY:
        from modelserving.sidecar.apikeys import ApiKeyAuthenticator

        async with ApiKeyAuthenticator.running(config) as authenticator:
            yield authenticator
    else:
        from modelserving.sidecar.kubernetes_auth import KubernetesAuthenticator

        async with KubernetesAuthenticator.running(config) as authenticator:
            yield authenticator
