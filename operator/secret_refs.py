"""The Secrets a serving's pods read only when they start, and the digest of them that the
pod template carries, so that a Secret changed in place rolls the pods.

TF Serving reads its environment (spec.server.env's `valueFrom.secretKeyRef`, and every
key of spec.server.envFrom's `secretRef`) once, at start: a changed value reaches it only
through new pods. (The API-key Secret is another matter: it is mounted, and the sidecar
reloads it live.)

The pod template's digest covers what identifies each Secret's version, its uid and
resourceVersion (an edit changes the latter, a Secret deleted and made again both), never
its values: anyone who may read the Deployment reads the digest, and an unsalted digest of a
short value gives the value to whoever tries the likely ones. The operator keeps in memory, never
writes, a digest of the values the pods read, so that an edit of another key of those Secrets
rolls nothing (reconcile keeps the template's digest while the values read are the same).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The key of a (Secret, key, optional) read that stands for every key of the Secret (envFrom).
EVERY_KEY = "*"


def secret_keys(
    env: Iterable[Mapping[str, Any]], env_from: Iterable[Mapping[str, Any]] = ()
) -> tuple[tuple[str, str, bool], ...]:
    """(Secret, key, optional) of every variable of a container's env that comes from a
    Secret, and (Secret, EVERY_KEY, optional) of each Secret its envFrom reads whole."""
    found = []
    for variable in env:
        ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name") and ref.get("key"):
            found.append((ref["name"], ref["key"], bool(ref.get("optional"))))
    for source in env_from:
        ref = source.get("secretRef") or {}
        if ref.get("name"):
            found.append((ref["name"], EVERY_KEY, bool(ref.get("optional"))))
    return tuple(sorted(set(found)))


def secret_names(
    env: Iterable[Mapping[str, Any]], env_from: Iterable[Mapping[str, Any]] = ()
) -> tuple[str, ...]:
    return tuple(sorted({name for name, _, _ in secret_keys(env, env_from)}))


@dataclass(frozen=True)
class SecretRead:
    """A Secret as the operator read it: its version (uid and resourceVersion), and a digest of
    each of its values, kept in memory only."""

    version: str
    digests: Mapping[str, str]

    @classmethod
    def of(cls, secret: Mapping[str, Any]) -> SecretRead:
        meta = secret.get("metadata") or {}
        return cls(f"{meta.get('uid')}/{meta.get('resourceVersion')}", key_digests(secret))


def key_digests(secret: Mapping[str, Any]) -> dict[str, str]:
    """A digest of each value of a Secret (as the API returns it: `data`, base64)."""
    return {
        key: hashlib.sha256(base64.b64decode(value or "")).hexdigest()[:32]
        for key, value in (secret.get("data") or {}).items()
    }


def values_digest(
    keys: Iterable[tuple[str, str, bool]], secrets: Mapping[str, SecretRead | None]
) -> str | None:
    """A digest of the values the pods read, for the operator's memory alone (never written);
    None while a Secret they need is missing."""
    read: list[list[object]] = []
    for name, key, optional in keys:
        found = secrets.get(name)
        if found is None and not optional:
            return None
        digests = found.digests if found else {}
        if key == EVERY_KEY:
            read.append([name, key, sorted(digests.items())])
        else:
            read.append([name, key, digests.get(key)])  # an optional one may be absent
    return hashlib.sha256(json.dumps(read).encode()).hexdigest()[:32]


def versions_checksum(
    keys: Iterable[tuple[str, str, bool]], secrets: Mapping[str, SecretRead | None]
) -> str | None:
    """The pod template's digest: the versions of the Secrets the pods read, none of their
    values; None while a Secret they need is missing (new pods could not start without it:
    the pods are left as they are)."""
    versions: dict[str, str | None] = {}
    for name, _, optional in keys:
        found = secrets.get(name)
        if found is None and not optional:
            return None
        versions[name] = found.version if found else None
    return hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()[:32]
