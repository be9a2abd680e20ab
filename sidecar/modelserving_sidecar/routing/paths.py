"""The sidecar's request paths: one canonical form of the path, and the table that maps it to a
route of this pod's model. Pure functions; the app authorizes the same canonical path and
forwards it (a path that names no version: to the version the router chose for the request).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from modelserving_sidecar.errors import SidecarError

# RFC 3986 pchar without ";" (path parameters: servers disagree about them) and without "%"
# (after one decoding a "%" left means double encoding or a broken escape). A decoded segment
# must be made of these only, so "%2F", "%5C", "%00", "%252F" and non-ASCII are refused.
_SEGMENT_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:@!$&'()*+,="
)
VERBS = ("predict", "classify", "regress")


class PathRefused(SidecarError):
    """The path is malformed or ambiguous: refused before any decision is made on it."""

    def __init__(self, why: str) -> None:
        super().__init__(400, f"Malformed request path: {why}")


def canonical_path(raw_path: str) -> str:
    """The one form of a request path (query dropped) that auth and routing both see.

    Doubled slashes and "." segments are removed, ".." is resolved, a trailing slash is dropped
    and percent-escapes of allowed characters are decoded; anything that could read two ways
    (an encoded "/" or "\\", double encoding, ";" parameters, control or non-ASCII characters,
    ".." above the root, a target that is not a path) raises PathRefused.
    """
    path = raw_path.partition("?")[0]
    if not path.startswith("/"):
        raise PathRefused("not an absolute path")
    segments: list[str] = []
    for segment in path.split("/"):
        if "%" in segment:
            try:
                segment = unquote_to_bytes(segment).decode("ascii")
            except UnicodeDecodeError:
                raise PathRefused("non-ASCII characters") from None
        if not _SEGMENT_CHARS.issuperset(segment):
            raise PathRefused("characters that are not allowed in a path segment")
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise PathRefused("'..' above the root")
            segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


class RouteKind(enum.Enum):
    INFERENCE = "inference"  # :predict, :classify, :regress; forwarded and logged
    MODEL_STATUS = "status"  # GET /v1/models/{name}[...]; forwarded
    MODEL_METADATA = "metadata"  # GET /v1/models/{name}[...]/metadata; forwarded
    HEALTHZ = "healthz"
    READYZ = "readyz"
    METRICS = "metrics"
    NOT_FOUND = "not_found"  # answered 404 after auth: nothing is said about paths to strangers


@dataclass(frozen=True, slots=True)
class Route:
    """What a canonical path names: how to answer it and what to forward to TF Serving."""

    kind: RouteKind
    label: str  # the metrics label: a fixed, small set of names, never the raw path
    methods: frozenset[str]
    public: bool = False  # answered without a credential
    upstream_path: str = ""  # the TF Serving path to forward to (the split's: no version)
    model_version: int | None = None  # the version the path names (/versions/<v>)
    version_label: str | None = None  # the label the path names (/labels/<l>)
    error: str = ""  # for NOT_FOUND: TF Serving's words


_PUBLIC = {
    "/healthz": RouteKind.HEALTHZ,
    "/readyz": RouteKind.READYZ,
    "/metrics": RouteKind.METRICS,
}
_GET = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})
_TFS = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|(?P<metadata>/metadata))?"
)
_HOPSWORKS = re.compile(
    r"/hopsworks-api/api/project/(?P<project>[^/]+)/(?:inference/)?models/(?P<name>[^/:]+)"
    r":(?P<verb>predict|classify|regress)"
)
_UNKNOWN_PATH = Route(RouteKind.NOT_FOUND, "unmatched", frozenset(), error="Not Found")


class RouteTable:
    """The routes of one pod's model, precomputed: the usual paths are one dict lookup away.

    A path that names no version is the split's (the router chooses the version); one that names
    a version or a label bypasses the split."""

    def __init__(self, model_name: str, namespace: str, project_id: int | None) -> None:
        self.model_name = model_name
        self.projects = frozenset(
            {namespace} | ({str(project_id)} if project_id is not None else set())
        )
        base = f"/v1/models/{model_name}"
        exact: dict[str, Route] = {}
        for path, kind in _PUBLIC.items():
            exact[path] = Route(kind, kind.value, _GET, public=True)
        exact[base] = self._status(base, None)
        exact[f"{base}/metadata"] = self._metadata(f"{base}/metadata", None)
        for verb in VERBS:
            route = self._inference(verb, f"{base}:{verb}", None)
            exact[f"{base}:{verb}"] = route
            for project in self.projects:
                for infix in ("", "inference/"):
                    exact[
                        f"/hopsworks-api/api/project/{project}/{infix}models/{model_name}:{verb}"
                    ] = route
        self._exact = exact

    @staticmethod
    def _status(upstream_path: str, version: int | None, label: str | None = None) -> Route:
        return Route(
            RouteKind.MODEL_STATUS,
            "status",
            _GET,
            upstream_path=upstream_path,
            model_version=version,
            version_label=label,
        )

    @staticmethod
    def _metadata(upstream_path: str, version: int | None, label: str | None = None) -> Route:
        return Route(
            RouteKind.MODEL_METADATA,
            "metadata",
            _GET,
            upstream_path=upstream_path,
            model_version=version,
            version_label=label,
        )

    @staticmethod
    def _inference(
        verb: str, upstream_path: str, version: int | None, label: str | None = None
    ) -> Route:
        return Route(
            RouteKind.INFERENCE,
            verb,
            _POST,
            upstream_path=upstream_path,
            model_version=version,
            version_label=label,
        )

    def lookup_exact(self, path: str) -> Route | None:
        """The route of a path that is already canonical and one of the usual ones."""
        return self._exact.get(path)

    def resolve(self, path: str) -> Route:
        """The route of a canonical path; unknown paths and other models get a NOT_FOUND route."""
        route = self._exact.get(path)
        if route is not None:
            return route
        if match := _TFS.fullmatch(path):
            return self._resolve_tfserving(path, match)
        if match := _HOPSWORKS.fullmatch(path):
            if match["project"] not in self.projects:
                return Route(
                    RouteKind.NOT_FOUND,
                    "unmatched",
                    frozenset(),
                    error=f"Project not found: {match['project']}",
                )
            return self._not_this_model(match["name"], None)  # our own name was in the table
        return _UNKNOWN_PATH

    def _resolve_tfserving(self, path: str, match: re.Match[str]) -> Route:
        version = int(match["version"]) if match["version"] is not None else None
        if match["name"] != self.model_name:
            return self._not_this_model(match["name"], version)
        # A label is resolved by the router (the routing file names them); one it does not know
        # goes to TF Serving as it came.
        label = match["label"]
        if match["verb"]:
            return self._inference(match["verb"], path, version, label)
        if match["metadata"]:
            return self._metadata(path, version, label)
        return self._status(path, version, label)

    @staticmethod
    def _not_this_model(name: str, version: int | None) -> Route:
        # TF Serving's own words for a model it does not serve.
        wanted = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        return Route(
            RouteKind.NOT_FOUND,
            "unmatched",
            frozenset(),
            error=f"Servable not found for request: {wanted}",
        )
