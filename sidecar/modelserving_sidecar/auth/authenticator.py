"""Who may call a serving: what an authenticator is (API keys, Kubernetes tokens, or none: which
one `auth.mode` chooses is the app's `open_authenticator`), and the refusals it answers with
(401 no or bad credential, 403 not allowed, 503 unsure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from modelserving_sidecar.config import SidecarConfig
from modelserving_sidecar.errors import SidecarError


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


@dataclass(frozen=True, slots=True)
class AuthHealth:
    """Whether the auth mode's configuration is usable, and if not what is wrong (never a
    secret value): published in the pod's model report."""

    ready: bool
    error: str = ""


READY = AuthHealth(True)


class Authenticator(Protocol):
    mode: str

    async def authenticate(self, authorization: str | None) -> str | None:
        """The caller's name (never the credential) from an Authorization header, or raise."""
        ...

    def health(self) -> AuthHealth:
        """Whether this authenticator can let anyone in as configured."""
        ...


class UnusableAuthenticator:
    """An auth mode whose configuration cannot be used (no Kubernetes API server to ask): every
    request gets 503, never a refusal, and `health` says why."""

    def __init__(self, mode: str, error: str) -> None:
        self.mode, self._error = mode, error

    async def authenticate(self, authorization: str | None) -> str | None:
        raise AuthUnavailable(f"The credential cannot be checked now ({self._error})")

    def health(self) -> AuthHealth:
        return AuthHealth(False, self._error)


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
    return serving_challenge(scheme, config.serving.namespace, config.serving.name)


def serving_challenge(scheme: str, namespace: str, name: str) -> str:
    """The WWW-Authenticate of a serving's 401: its scheme, and the serving as the realm (the
    activator's refusal before a wake says the same as the sidecar's)."""
    return f'{scheme} realm="{namespace}/{name}"'
