"""The Secrets a serving's pods read only when they start, and the digest of them that the
pod template carries, so that a Secret changed in place rolls the pods.

TF Serving reads its environment (spec.server.env's `valueFrom.secretKeyRef`, and every
key of spec.server.envFrom's `secretRef`) once, at start: a changed value reaches it only
through new pods. (The API-key Secret is another matter: it is mounted, and the sidecar
reloads it live.) The operator keeps of each Secret only a digest per key, never a value;
the pod template's digest covers exactly the keys the pods read, so a change to another key
of a Secret that env reads rolls nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

# A Secret's keys and their values' digests, as the operator keeps it.
KeyDigests = Mapping[str, str]


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


def key_digests(secret: Mapping[str, Any]) -> dict[str, str]:
    """A digest of each value of a Secret (as the API returns it: `data`, base64)."""
    return {
        key: hashlib.sha256(base64.b64decode(value or "")).hexdigest()[:32]
        for key, value in (secret.get("data") or {}).items()
    }


def secrets_checksum(
    keys: Iterable[tuple[str, str, bool]], secrets: Mapping[str, KeyDigests | None]
) -> str | None:
    """The pod template's digest of the values the pods read; None while a Secret they need
    is missing (new pods could not start without it: the pods are left as they are)."""
    read: list[list[object]] = []
    for name, key, optional in keys:
        digests = secrets.get(name)
        if digests is None and not optional:
            return None
        if key == EVERY_KEY:
            read.append([name, key, sorted((digests or {}).items())])
        else:
            read.append([name, key, (digests or {}).get(key)])  # an optional one may be absent
    return hashlib.sha256(json.dumps(read).encode()).hexdigest()[:32]
