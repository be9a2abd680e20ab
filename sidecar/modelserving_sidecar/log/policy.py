"""What the inference log keeps of each exchange: whether it is logged at all (the mode and the
sampling rates, decided inline from the request id) and what is done to its payloads before the
record is encoded (redaction at JSON paths, a non-JSON policy, a size limit).

Sampling is a pure function of the request id and the serving's sampling key (a 64-bit BLAKE2b
of the id keyed with it, against the rate), so a retried request, whichever pod it reaches, is
sampled the same way, and a caller, who does not know the key, cannot choose request ids that
are never logged. Payload shaping runs in the pipeline's writer task, never on the request
path.

Redaction fails closed: a payload the rules apply to but cannot be applied to (it is not JSON,
or an object in it names a key twice, of which the model server may read the copy the rules did
not see) is left out of the record unless the settings say `keep` (`non_json_policy`, the one
place that decides what an unset non-JSON policy means).

Redaction paths: dot-separated object keys, `*` for every key of an object, `[*]` for every
item of an array, `[N]` for one item, `['odd.key']` for a key with odd characters, optionally
after a leading `$` (`$.instances[*].email`, `inputs.*.ssn`, `signature_name`).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_RATE_SCALE = 1 << 64
MASK = "***"  # what a masked value becomes
HASH_PREFIX = "sha256:"


class RedactAction(enum.StrEnum):
    DROP = "drop"  # remove the key (or the array item)
    MASK = "mask"  # replace the value with "***"
    HASH = "hash"  # replace the value with "sha256:" + the hex SHA-256 of its JSON


class RedactTarget(enum.StrEnum):
    BOTH = "both"
    REQUEST = "request"
    RESPONSE = "response"


class OversizePolicy(enum.StrEnum):
    TRUNCATE = "truncate"  # keep the first maxPayloadBytes bytes
    DIGEST = "digest"  # replace the payload by {"bytes": N, "sha256": "..."}


class NonJsonPolicy(enum.StrEnum):
    KEEP = "keep"  # logged as it came (no redaction is possible)
    DROP = "drop"  # the payload is left empty in the record


def non_json_policy(said: NonJsonPolicy | None, rules_apply: bool) -> NonJsonPolicy:
    """What is done to a payload that is not JSON: what the settings say, else drop it where
    redaction rules apply to it (they cannot be applied, and what they hide must not leak) and
    keep it where none does (there is nothing to hide)."""
    if said is not None:
        return said
    return NonJsonPolicy.DROP if rules_apply else NonJsonPolicy.KEEP


class Part(enum.StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class RedactPathError(ValueError):
    """A redaction path does not follow the grammar; the message says where."""


# A path step: ("key", name), ("anykey", None), ("item", None) for [*], ("item", N) for [N].
Step = tuple[str, Any]

_STEP = re.compile(
    r"""\[\*\]|\[(?P<index>[0-9]+)\]|\[(?P<q>['"])(?P<quoted>.+?)(?P=q)\]|(?P<dot>\.)?(?P<name>[^.\[\]'"]+)"""
)


def parse_redact_path(path: str) -> tuple[Step, ...]:
    """The steps of a redaction path such as `instances[*].email`."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None or (match["name"] and not match["dot"] and steps):
            raise RedactPathError(f"{path!r}: unexpected {text[pos:]!r}")
        if match["dot"] and not steps and pos != 0:
            raise RedactPathError(f"{path!r}: unexpected {text[pos:]!r}")
        if match["name"] is not None:
            name = match["name"]
            steps.append(("anykey", None) if name == "*" else ("key", name))
        elif match["quoted"] is not None:
            steps.append(("key", match["quoted"]))
        elif match["index"] is not None:
            steps.append(("item", int(match["index"])))
        else:
            steps.append(("item", None))
        pos = match.end()
    if not steps:
        raise RedactPathError(f"{path!r}: empty path")
    return tuple(steps)


@dataclass(frozen=True)
class RedactRule:
    path: str
    action: RedactAction = RedactAction.MASK
    target: RedactTarget = RedactTarget.BOTH

    def steps(self) -> tuple[Step, ...]:
        return parse_redact_path(self.path)

    def applies_to(self, part: Part) -> bool:
        return self.target is RedactTarget.BOTH or self.target.value == part.value


def _children(node: Any, step: Step) -> Iterable[Any]:
    """The keys or indices of `node` that a step selects."""
    kind, arg = step
    if kind == "key":
        if isinstance(node, dict) and arg in node:
            return (arg,)
    elif kind == "anykey":
        if isinstance(node, dict):
            return tuple(node)
    elif isinstance(node, list):
        if arg is None:
            return range(len(node))
        if arg < len(node):
            return (arg,)
    return ()


def _replacement(value: Any, action: RedactAction) -> Any:
    if action is RedactAction.MASK:
        return MASK
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a lone surrogate the payload sent as \uXXXX hashes too (UTF-8 otherwise).
    return HASH_PREFIX + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()


def redact(document: Any, steps: tuple[Step, ...], action: RedactAction) -> bool:
    """Apply one rule to a parsed JSON document in place; True when something changed."""
    changed = False
    nodes = [document]
    for depth, step in enumerate(steps):
        last = depth == len(steps) - 1
        following = []
        for node in nodes:
            selected = list(_children(node, step))
            if not last:
                following += [node[k] for k in selected]
                continue
            if not selected:
                continue
            changed = True
            if action is RedactAction.DROP:
                for k in sorted(selected, reverse=True) if isinstance(node, list) else selected:
                    del node[k]
            else:
                for k in selected:
                    node[k] = _replacement(node[k], action)
        nodes = following
    return changed


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object of a payload that rules apply to; a key named twice makes the payload one they
    cannot be applied to (json keeps the last copy, TF Serving's parser reads the first)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("an object names a key twice")
    return document


@dataclass(frozen=True, slots=True)
class ShapedPayload:
    text: str
    redacted: bool = False
    cut: OversizePolicy | None = None
    dropped: bool = False
    # Why the payload could not be made into the record's text (the text is then
    # `unencodable(reason)`): None when it could.
    unencodable: str | None = None

    def marks(self) -> list[str]:
        """What was done, for the record's `payload` header (empty when nothing)."""
        marks = []
        if self.unencodable is not None:
            marks.append("unencodable")
        if self.dropped:
            marks.append("dropped")
        if self.redacted:
            marks.append("redacted")
        if self.cut is OversizePolicy.TRUNCATE:
            marks.append("cut")
        elif self.cut is OversizePolicy.DIGEST:
            marks.append("digest")
        return marks


class LogPolicy:
    """A serving's logging choices, compiled once: `sampled()` for the request path,
    `shape()` for the pipeline."""

    def __init__(
        self,
        *,
        errors_only: bool = False,
        success_rate: float = 1.0,
        error_rate: float = 1.0,
        max_payload_bytes: int = 0,
        oversize: OversizePolicy = OversizePolicy.TRUNCATE,
        non_json: NonJsonPolicy | None = None,  # None: see non_json_policy
        rules: tuple[RedactRule, ...] = (),
        sample_key: bytes | None = None,  # None: one of its own (no other policy agrees)
    ) -> None:
        success_rate = 0.0 if errors_only else success_rate
        self._sample_key = sampling_key(os.urandom(32) if sample_key is None else sample_key)
        # None: always; 0: never; else the threshold the request id's hash must be under.
        self._success = _threshold(success_rate)
        self._error = _threshold(error_rate)
        self.max_payload_bytes = max_payload_bytes
        self.oversize = oversize
        self._rules = {
            part: tuple((r.steps(), r.action) for r in rules if r.applies_to(part)) for part in Part
        }
        self.non_json = {part: non_json_policy(non_json, bool(self._rules[part])) for part in Part}

    @property
    def untouched_up_to(self) -> float:
        """The size in bytes up to which `shape` only decodes a payload: the size limit when no
        rule applies and no payload that is not JSON is dropped (infinite without a limit),
        else 0."""
        if any(self._rules.values()) or NonJsonPolicy.DROP in self.non_json.values():
            return 0
        return self.max_payload_bytes or math.inf

    def cut_at(self, part: Part) -> int:
        """How much of a payload's text the record can hold when nothing but the size limit
        applies to it (oversize truncate, no redaction rule, no non-JSON drop): the limit;
        else 0, the whole text is needed (its digest, its redaction)."""
        if (
            self.oversize is OversizePolicy.TRUNCATE
            and not self._rules[part]
            and self.non_json[part] is not NonJsonPolicy.DROP
        ):
            return self.max_payload_bytes
        return 0

    # ----------------------------------------------------------------- inline

    def sampled(self, request_id: str, status: int) -> bool:
        """Whether this exchange is logged: O(1), one small hash at most."""
        threshold = self._success if 200 <= status < 300 else self._error
        if threshold is None:
            return True
        if threshold == 0:
            return False
        return sample_point(request_id, self._sample_key) < threshold

    # ----------------------------------------------------------------- in the pipeline

    def shape(self, body: bytes, part: Part) -> ShapedPayload:
        """The payload's text for the record, after redaction, the non-JSON policy and the
        size limit."""
        rules = self._rules[part]
        drop_non_json = self.non_json[part] is NonJsonPolicy.DROP
        redacted = False
        if body and (rules or drop_non_json):
            try:
                document = json.loads(body, object_pairs_hook=_unique_keys if rules else None)
            except ValueError:  # UnicodeDecodeError and a key named twice included
                if drop_non_json:
                    return ShapedPayload("", dropped=True)
            except RecursionError:  # past Python's ~1,000 levels; no tensor nests past 254
                if drop_non_json:
                    return unencodable("JSON nested too deeply to parse")
            else:
                for steps, action in rules:
                    redacted = redact(document, steps, action) or redacted
                if redacted:
                    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
                    try:
                        body = text.encode()
                    except UnicodeEncodeError:  # a lone surrogate the payload sent as \uXXXX
                        body = json.dumps(document, separators=(",", ":")).encode()
        limit = self.max_payload_bytes
        if limit and len(body) > limit:
            if self.oversize is OversizePolicy.DIGEST:
                digest = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                return ShapedPayload(json.dumps(digest), redacted, OversizePolicy.DIGEST)
            # A multi-byte character split at the limit is dropped, not turned into U+FFFD.
            text = body[:limit].decode("utf-8", errors="ignore")
            return ShapedPayload(text, redacted, OversizePolicy.TRUNCATE)
        return ShapedPayload(body.decode("utf-8", errors="replace"), redacted)


def unencodable(reason: str, message: bytes | None = None) -> ShapedPayload:
    """What a record holds in place of a payload the log cannot make into its text (a gRPC
    message it cannot write as JSON, JSON nested past what can be parsed, a fault of ours): a
    marker object with the reason, so a reader of the Avro value alone sees why the payload is
    missing, and the message's bytes in base64 when given (where no rule or `drop` policy
    forbids keeping what could not be read). The reason never quotes the payload."""
    marker: dict[str, str] = {"unencodable": reason}
    if message is not None:
        marker["b64"] = base64.b64encode(message).decode()
    return ShapedPayload(json.dumps(marker, ensure_ascii=False), unencodable=reason)


def sampling_key(secret: bytes) -> bytes:
    """The BLAKE2b key of a serving's sampling secret (of any length; a key has at most 64)."""
    return hashlib.blake2b(secret, digest_size=32, person=b"ms-sampling").digest()


def sample_point(request_id: str, key: bytes) -> int:
    """Where a request id falls in [0, 2**64) under a sampling key (`sampling_key`): the same on
    every pod and every run that has the key, unpredictable without it."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big")


def _threshold(rate: float) -> int | None:
    if rate >= 1.0:
        return None
    if rate <= 0.0:
        return 0
    return int(rate * _RATE_SCALE)
