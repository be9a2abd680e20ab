"""A request without a credential in the scheme of its serving's auth mode is refused by the
activator with the sidecar's own 401 (its body, its WWW-Authenticate), before it can wake the
serving; a credential in that scheme, good or bad, is the sidecar's to judge."""

from __future__ import annotations

import json

import pytest

from modelserving_sidecar.activator.credentials import missing_credential
from modelserving_sidecar.activator.hosts import Serving, ServingRef
from modelserving_sidecar.auth.api_keys import ApiKeyAuthenticator
from modelserving_sidecar.auth.authenticator import Unauthenticated, challenge
from modelserving_sidecar.auth.kubernetes_tokens import KubernetesAuthenticator
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.errors import error_body


def serving(mode: str) -> Serving:
    return Serving(ServingRef("demo", "mnist"), "uid", mode, frozenset({"mnist"}))


def sidecar_config(mode: str):
    return parse_config(
        {
            "serving": {"name": "mnist", "namespace": "demo"},
            "model": {"name": "mnist", "version": 1, "modelId": 17},
            "auth": {"mode": mode},
        }
    )


@pytest.mark.parametrize(
    ("mode", "authorization"),
    [
        ("apiKey", "ApiKey some-key"),
        ("apiKey", "apikey some-key"),
        ("kubernetes", "Bearer some.jwt.token"),
        ("none", None),
        ("none", "Bearer anything"),
        ("aNewModeOfALaterVersion", None),
    ],
)
def test_a_credential_in_the_serving_scheme_or_no_auth_goes_on(mode, authorization):
    assert missing_credential(serving(mode), authorization) is None


@pytest.mark.parametrize(
    ("mode", "authorization"),
    [
        ("apiKey", None),
        ("apiKey", "Bearer some.jwt.token"),
        ("apiKey", "ApiKey "),
        ("kubernetes", None),
        ("kubernetes", "ApiKey some-key"),
        ("kubernetes", "Basic dXNlcjpwYXNz"),
    ],
)
def test_no_credential_in_the_serving_scheme_is_refused_401(mode, authorization):
    refusal = missing_credential(serving(mode), authorization)
    assert refusal is not None and refusal.status == 401


@pytest.mark.parametrize("mode", ["apiKey", "kubernetes"])
async def test_the_refusal_is_the_sidecars_own_answer(mode, tmp_path):
    """The same status, body and WWW-Authenticate as the sidecar's authenticator gives a request
    with no credential: the two cannot drift."""
    config = sidecar_config(mode)
    if mode == "apiKey":
        sidecar = ApiKeyAuthenticator(tmp_path, challenge("ApiKey", config))
    else:
        sidecar = KubernetesAuthenticator(None, None, config)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated) as said:
        await sidecar.authenticate(None)
    ours = missing_credential(serving(mode), None)
    assert ours is not None
    assert (ours.status, dict(ours.headers or {})) == (
        said.value.status,
        dict(said.value.headers or {}),
    )
    assert json.loads(error_body(ours.message)) == json.loads(error_body(said.value.message))
