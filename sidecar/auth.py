"""Who may call a serving: what an authenticator is (API keys, Kubernetes tokens, or none: which
one `auth.mode` chooses is the app's `open_authenticator`), and the refusals it answers with
(401 no or bad credential, 403 not allowed, 503 unsure).
"""

from __future__ import annotations

from typing import Protocol

from modelserving.sidecar.config import SidecarConfig
from modelserving.sidecar.errors import SidecarError


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
