"""The Secrets and ConfigMaps a serving's pods read only when they start, and the digest of
them that the pod template carries, so that one changed in place rolls the pods.

TF Serving reads its environment once, at start: spec.server.env's `valueFrom.secretKeyRef`
and `valueFrom.configMapKeyRef`, and every key of spec.server.envFrom's `secretRef` and
`configMapRef`. A changed value reaches it only through new pods. (The API-key Secret is
another matter: it is mounted, and the sidecar reloads it live.)

The pod template's digest covers what identifies each source's version, its uid and
resourceVersion (an edit changes the latter, one deleted and made again both), never its
values: anyone who may read the Deployment reads the digest, and an unsalted digest of a short
value gives the value to whoever tries the likely ones. The operator keeps in memory, never
writes, a digest of the values the pods read, so that an edit of another key of those sources
rolls nothing (reconcile keeps the template's digest while the values read are the same).

An operator that may not read Secrets (--read-secrets false) reads the ConfigMaps alone: `kinds`
says which are read.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SECRET = "Secret"
CONFIG_MAP = "ConfigMap"
# How each kind is named in an env variable's valueFrom and in an envFrom source.
_KEY_REFS = {SECRET: "secretKeyRef", CONFIG_MAP: "configMapKeyRef"}
_SOURCE_REFS = {SECRET: "secretRef", CONFIG_MAP: "configMapRef"}
# The key of a read that stands for every key of the source (envFrom).
EVERY_KEY = "*"

# A source the pods read: (kind, name).
Source = tuple[str, str]
# A read: (kind, name, key or EVERY_KEY, optional).
Read = tuple[str, str, str, bool]


def kinds_read(read_secrets: bool) -> tuple[str, ...]:
    """The kinds of source the operator reads: ConfigMaps always, Secrets when it may."""
    return (SECRET, CONFIG_MAP) if read_secrets else (CONFIG_MAP,)


def env_reads(
    env: Iterable[Mapping[str, Any]],
    env_from: Iterable[Mapping[str, Any]] = (),
    kinds: Iterable[str] = (SECRET, CONFIG_MAP),
) -> tuple[Read, ...]:
    """(kind, name, key, optional) of every variable of a container's env that comes from a
    Secret or ConfigMap, and (kind, name, EVERY_KEY, optional) of each one its envFrom reads
    whole; of the `kinds` given."""
    kinds = tuple(kinds)
    found = []
    for variable in env:
        value_from = variable.get("valueFrom") or {}
        for kind in kinds:
            ref = value_from.get(_KEY_REFS[kind]) or {}
            if ref.get("name") and ref.get("key"):
                found.append((kind, ref["name"], ref["key"], bool(ref.get("optional"))))
    for source in env_from:
        for kind in kinds:
            ref = source.get(_SOURCE_REFS[kind]) or {}
            if ref.get("name"):
                found.append((kind, ref["name"], EVERY_KEY, bool(ref.get("optional"))))
    return tuple(sorted(set(found)))


def env_sources(
    env: Iterable[Mapping[str, Any]],
    env_from: Iterable[Mapping[str, Any]] = (),
    kinds: Iterable[str] = (SECRET, CONFIG_MAP),
) -> tuple[Source, ...]:
    """(kind, name) of each Secret and ConfigMap (of the `kinds` given) the environment reads."""
    return tuple(sorted({(kind, name) for kind, name, _, _ in env_reads(env, env_from, kinds)}))


@dataclass(frozen=True)
class SourceRead:
    """A Secret or ConfigMap as the operator read it: its version (uid and resourceVersion), and
    a digest of each of its values, kept in memory only."""

    version: str
    digests: Mapping[str, str]

    @classmethod
    def of(cls, kind: str, found: Mapping[str, Any]) -> SourceRead:
        meta = found.get("metadata") or {}
        return cls(f"{meta.get('uid')}/{meta.get('resourceVersion')}", key_digests(kind, found))


def key_digests(kind: str, found: Mapping[str, Any]) -> dict[str, str]:
    """A digest of each value of a Secret or ConfigMap, as the API returns them: a Secret's
    `data` and a ConfigMap's `binaryData` in base64, a ConfigMap's `data` as text (the API
    keeps the two maps' keys apart)."""
    values = {k: base64.b64decode(v or "") for k, v in (found.get("binaryData") or {}).items()}
    data = found.get("data") or {}
    if kind == CONFIG_MAP:
        values.update((k, (v or "").encode()) for k, v in data.items())
    else:
        values.update((k, base64.b64decode(v or "")) for k, v in data.items())
    return {key: hashlib.sha256(value).hexdigest()[:32] for key, value in values.items()}


def _label(kind: str, name: str) -> str:
    # A Secret by its bare name, as before ConfigMaps counted, so that an operator upgraded over
    # pods that read Secrets alone finds the digest they carry and rolls nothing. No Secret's
    # name holds a "/", so no ConfigMap's label is a Secret's.
    return name if kind == SECRET else f"{kind}/{name}"


def values_digest(keys: Iterable[Read], reads: Mapping[Source, SourceRead | None]) -> str | None:
    """A digest of the values the pods read, for the operator's memory alone (never written);
    None while a source they need is missing."""
    read: list[list[object]] = []
    for kind, name, key, optional in keys:
        found = reads.get((kind, name))
        if found is None and not optional:
            return None
        digests = found.digests if found else {}
        if key == EVERY_KEY:
            read.append([_label(kind, name), key, sorted(digests.items())])
        else:  # an optional one may be absent
            read.append([_label(kind, name), key, digests.get(key)])
    return hashlib.sha256(json.dumps(read).encode()).hexdigest()[:32]


def versions_checksum(
    keys: Iterable[Read], reads: Mapping[Source, SourceRead | None]
) -> str | None:
    """The pod template's digest: the versions of the sources the pods read, none of their
    values; None while one they need is missing (new pods could not start without it: the pods
    are left as they are)."""
    versions: dict[str, str | None] = {}
    for kind, name, _, optional in keys:
        found = reads.get((kind, name))
        if found is None and not optional:
            return None
        versions[_label(kind, name)] = found.version if found else None
    return hashlib.sha256(json.dumps(sorted(versions.items())).encode()).hexdigest()[:32]
