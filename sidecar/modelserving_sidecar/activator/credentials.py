"""The activator's one look at credentials: whether a request carries one in the scheme of the
serving's auth mode, so that a request without any is refused before it can wake a serving.

Never more than that: whether the key or token is good is the sidecar's to say, behind the
activator, as for every request. The refusal is the sidecar's own (its body, its
WWW-Authenticate), so that a caller sees the same 401 at zero as when the serving is up.
"""

from __future__ import annotations

from modelserving_sidecar.activator.hosts import Serving
from modelserving_sidecar.auth import api_keys, kubernetes_tokens
from modelserving_sidecar.auth.authenticator import (
    Unauthenticated,
    credential,
    serving_challenge,
)
from modelserving_sidecar.config import AuthMode

# auth mode -> (the scheme the sidecar reads, the sidecar's message when none is sent)
_SCHEMES: dict[str, tuple[str, str]] = {
    AuthMode.API_KEY.value: (api_keys.SCHEME, api_keys.KEY_REQUIRED),
    AuthMode.KUBERNETES.value: (kubernetes_tokens.SCHEME, kubernetes_tokens.TOKEN_REQUIRED),
}


def missing_credential(serving: Serving, authorization: str | None) -> Unauthenticated | None:
    """The sidecar's 401 when the request has no credential in the scheme of the serving's auth
    mode; None when it has one (good or not) or the serving needs none. An auth mode this
    version does not know is let through: the sidecar decides."""
    scheme = _SCHEMES.get(serving.auth_mode)
    if scheme is None or credential(authorization, scheme[0]) is not None:
        return None
    challenge = serving_challenge(scheme[0], serving.ref.namespace, serving.ref.name)
    return Unauthenticated(challenge, scheme[1])
