"""Which model version answers a request: the routing file the operator renders (`routing.yaml`:
weighted versions with labels, an optional shadow, what keeps a caller on one version), parsed
once per change, and the split table made of it and of the versions TF Serving reports
AVAILABLE. Pure: no I/O; `router` reads the file and swaps the table whole.

The split: a hash of the sticky key (a header's value, or the caller's identity; else the request
id) puts each request in one of 100 buckets, and each bucket belongs to a version: as the
routing file's `buckets` table says (the operator moves as few buckets as it can when weights
change: modelserving.split_buckets), else laid end to end in the order the versions are listed
(90/10: buckets 0-89 to the first, 90-99 to the second). Every replica computes the same, with
no shared state. A bucket whose owner is not AVAILABLE is lent, in
bucket order, to the AVAILABLE versions in proportion to their weights, and returns to its owner
once that is AVAILABLE; when no weighted version is AVAILABLE every bucket stays with its owner,
so that TF Serving's own error for an unavailable model is what the caller gets.
"""

from __future__ import annotations

import enum
import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelserving.split_buckets import BUCKETS, is_table_of, laid_end_to_end
from modelserving_sidecar.routing.paths import VERBS

LABEL = re.compile(r"[a-z][a-z0-9-]{0,62}")
# An HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Roles, the Kafka header `role` of a record: a main record's is the first label of the version
# that answered, or `stable`; a shadow copy's is `shadow`.
STABLE = "stable"
SHADOW = "shadow"


class RoutingError(ValueError):
    """The routing file is not what the operator renders; the message says where."""


class StickyBy(enum.StrEnum):
    HEADER = "header"  # the value of a request header
    CALLER = "caller"  # the authenticated caller's identity (API key name, Kubernetes user)
    NONE = "none"  # the request id: no two requests are tied


@dataclass(frozen=True, slots=True)
class WeightedVersion:
    version: int
    weight: int  # 0..100; the weights of a routing sum to 100
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ShadowVersion:
    version: int
    percent: int  # 1..100: the share of requests copied to it
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Routing:
    """The routing file, parsed and checked."""

    versions: tuple[WeightedVersion, ...]
    shadow: ShadowVersion | None = None
    sticky_by: StickyBy = StickyBy.NONE
    sticky_header: str = ""  # with sticky_by header
    # Each bucket's owner as the operator wrote it; empty: laid end to end in the listed order.
    buckets: tuple[int, ...] = ()

    @classmethod
    def one_version(cls, version: int) -> Routing:
        """What a serving of one version renders: all traffic to it, nothing sticky."""
        return cls((WeightedVersion(version, 100),))

    def role_of(self, version: int) -> str:
        """The role of a main record answered by `version`: its first label, else stable."""
        labels: tuple[str, ...] = ()
        for weighted in self.versions:
            if weighted.version == version:
                labels = weighted.labels
        if self.shadow is not None and self.shadow.version == version:
            labels = self.shadow.labels
        return labels[0] if labels else STABLE

    def labels(self) -> dict[str, int]:
        """Label -> version, the shadow's labels included."""
        named = {label: v.version for v in self.versions for label in v.labels}
        if self.shadow is not None:
            named.update({label: self.shadow.version for label in self.shadow.labels})
        return named


def _version(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RoutingError(
            f"{where}: expected a version number (an integer of 0 or more), got {value!r}"
        )
    return value


def _labels(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RoutingError(f"{where}: expected a list of labels, got {value!r}")
    for label in value:
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise RoutingError(
                f"{where}: {label!r} is not a label (lower-case letters, digits and '-', "
                "starting with a letter, at most 63)"
            )
    return tuple(value)


def _mapping(where: str, value: Any, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RoutingError(f"{where}: expected a mapping, got {value!r}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise RoutingError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}"
        )
    return value


def parse_routing(data: Any) -> Routing:
    """The routing file's mapping as a Routing, or RoutingError naming the first bad entry."""
    top = _mapping("routing", data, {"versions", "shadow", "sticky", "buckets"})
    raw_versions = top.get("versions")
    if not isinstance(raw_versions, list) or not raw_versions:
        raise RoutingError(
            f"versions: expected a list of one or more versions, got {raw_versions!r}"
        )
    versions = []
    for i, raw in enumerate(raw_versions):
        where = f"versions[{i}]"
        entry = _mapping(where, raw, {"version", "weight", "labels"})
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise RoutingError(f"{where}.weight: expected an integer from 0 to 100, got {weight!r}")
        versions.append(
            WeightedVersion(
                _version(f"{where}.version", entry.get("version")),
                weight,
                _labels(f"{where}.labels", entry.get("labels")),
            )
        )
    if sum(v.weight for v in versions) != 100:
        raise RoutingError(
            f"versions: the weights sum to {sum(v.weight for v in versions)}, not 100"
        )
    numbers = [v.version for v in versions]
    if len(set(numbers)) != len(numbers):
        raise RoutingError(f"versions: a version is listed twice in {numbers}")
    shadow = None
    if top.get("shadow") is not None:
        entry = _mapping("shadow", top["shadow"], {"version", "percent", "labels"})
        percent = entry.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            raise RoutingError(
                f"shadow.percent: expected an integer from 1 to 100, got {percent!r}"
            )
        shadow = ShadowVersion(
            _version("shadow.version", entry.get("version")),
            percent,
            _labels("shadow.labels", entry.get("labels")),
        )
        if shadow.version in numbers:
            raise RoutingError(f"shadow.version: {shadow.version} is also a weighted version")
    every_label = [label for v in versions for label in v.labels]
    every_label += list(shadow.labels) if shadow else []
    twice = sorted({label for label in every_label if every_label.count(label) > 1})
    if twice:
        raise RoutingError(f"labels: {', '.join(twice)} on more than one version (or twice)")
    sticky_by, header = StickyBy.NONE, ""
    if top.get("sticky") is not None:
        entry = _mapping("sticky", top["sticky"], {"by", "header"})
        try:
            sticky_by = StickyBy(entry["by"])
        except (KeyError, ValueError):
            choices = ", ".join(s.value for s in StickyBy)
            raise RoutingError(f"sticky.by: {entry.get('by')!r} is not one of {choices}") from None
        if sticky_by is StickyBy.HEADER:
            given = entry.get("header")
            if not isinstance(given, str) or not _HEADER_NAME.fullmatch(given):
                raise RoutingError(f"sticky.header: expected a header name, got {given!r}")
            header = given
    buckets: tuple[int, ...] = ()
    if top.get("buckets") is not None:
        raw_buckets = top["buckets"]
        weights = [(v.version, v.weight) for v in versions]
        if not (
            isinstance(raw_buckets, list)
            and all(isinstance(b, int) and not isinstance(b, bool) for b in raw_buckets)
            and is_table_of(raw_buckets, weights)
        ):
            raise RoutingError(
                f"buckets: expected {BUCKETS} version numbers, each version as many times as its "
                f"weight, got {raw_buckets!r}"
            )
        buckets = tuple(raw_buckets)
    return Routing(tuple(versions), shadow, sticky_by, header, buckets)


def bucket_of(key: str) -> int:
    """The split's bucket of a sticky key (or request id): 0..99, the same on every replica.

    CRC-32: a fifth of BLAKE2's cost on the request path, even over keys that differ in one
    character, and a function of its own, independent of the log's sampling hash (BLAKE2)."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % BUCKETS


def shadow_point(request_id: str) -> int:
    """0..99: a request is copied to the shadow when this is below the shadow's percent.

    BLAKE2 personalized for the shadow: independent of the split's bucket (another CRC-32 seed
    would not be: two CRCs of one length differ by a constant) and of the log's sampling."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"ms-shadow").digest()
    return int.from_bytes(digest) % BUCKETS


def owners(routing: Routing) -> tuple[int, ...]:
    """The version owning each bucket: the routing file's table, else the weights laid end to
    end in the listed order."""
    return routing.buckets or laid_end_to_end([(v.version, v.weight) for v in routing.versions])


def split_buckets(routing: Routing, available: frozenset[int]) -> tuple[int, ...]:
    """The version that answers each bucket, given the versions TF Serving reports AVAILABLE:
    the owner when it is AVAILABLE; else, lent in bucket order to the AVAILABLE weighted
    versions in proportion to their weights; the owner again when none is AVAILABLE."""
    table = list(owners(routing))
    lenders = [
        (v.version, v.weight) for v in routing.versions if v.version in available and v.weight > 0
    ]
    orphans = [b for b, version in enumerate(table) if version not in available]
    if not lenders or not orphans:
        return tuple(table)
    total = sum(weight for _, weight in lenders)
    for k, bucket in enumerate(orphans):
        point = k * total // len(orphans)
        for version, weight in lenders:
            if point < weight:
                table[bucket] = version
                break
            point -= weight
    return tuple(table)


@dataclass(frozen=True, slots=True, eq=False)
class VersionRoute:
    """Everything the request path needs of one version, made once per table: TF Serving's
    paths by verb, the answer's header value, the record's role, the metrics label."""

    version: int
    role: str
    paths: Mapping[str, str]  # "predict" / "classify" / "regress" / "status" / "metadata"
    header: str  # x-model-version's value
    known: bool = True  # named by the routing (else: an explicit path to another version)

    @classmethod
    def of(cls, model_name: str, version: int, role: str, known: bool = True) -> VersionRoute:
        base = f"/v1/models/{model_name}/versions/{version}"
        paths = {verb: f"{base}:{verb}" for verb in VERBS}
        paths.update(status=base, metadata=f"{base}/metadata")
        return cls(version, role, paths, str(version), known)


@dataclass(frozen=True, slots=True, eq=False)
class SplitTable:
    """One routing with one set of AVAILABLE versions, ready for the request path: replaced
    whole when either changes, never patched."""

    routing: Routing
    available: frozenset[int]
    buckets: tuple[VersionRoute, ...]  # BUCKETS entries
    only: VersionRoute | None  # every bucket to this version: no hash needed
    default: VersionRoute  # the first weighted version: what a request no version took logs
    weighted: frozenset[int]  # the versions with a weight above 0
    by_version: Mapping[int, VersionRoute]
    by_label: Mapping[str, VersionRoute]
    shadow: VersionRoute | None
    shadow_percent: int
    # The request header whose value is the sticky key, in lower case: gRPC's metadata keys are,
    # and REST's headers are matched in any case.
    sticky_header: str | None
    sticky_caller: bool

    @classmethod
    def build(cls, model_name: str, routing: Routing, available: frozenset[int]) -> SplitTable:
        named = [v.version for v in routing.versions]
        if routing.shadow is not None:
            named.append(routing.shadow.version)
        by_version = {v: VersionRoute.of(model_name, v, routing.role_of(v)) for v in named}
        buckets = tuple(by_version[v] for v in split_buckets(routing, available))
        distinct = {route.version for route in buckets}
        shadow = routing.shadow
        return cls(
            routing=routing,
            available=available,
            buckets=buckets,
            only=buckets[0] if len(distinct) == 1 else None,
            default=by_version[routing.versions[0].version],
            weighted=frozenset(v.version for v in routing.versions if v.weight > 0),
            by_version=by_version,
            by_label={label: by_version[v] for label, v in routing.labels().items()},
            shadow=by_version[shadow.version] if shadow is not None else None,
            shadow_percent=shadow.percent if shadow is not None else 0,
            sticky_header=(
                routing.sticky_header.lower() if routing.sticky_by is StickyBy.HEADER else None
            ),
            sticky_caller=routing.sticky_by is StickyBy.CALLER,
        )

    @property
    def ready(self) -> bool:
        """Whether TF Serving reports AVAILABLE a version the split may send traffic to: what
        /readyz and the gRPC health check answer."""
        return not self.available.isdisjoint(self.weighted)

    def version(self, model_name: str, version: int) -> VersionRoute:
        """The route of an explicit version path: the routing's, or one made for the request."""
        route = self.by_version.get(version)
        if route is None:
            route = VersionRoute.of(model_name, version, STABLE, known=False)
        return route
