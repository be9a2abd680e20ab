"""Which serving a request's Host names: the names of each serving's Service (`<name>`,
`<name>.<namespace>`, `<name>.<namespace>.svc`, `<name>.<namespace>.svc.<cluster domain>`) and
the host of its Ingress, with or without a port; and what the activator knows of a serving from
its ModelServing (its auth mode, its uid for Events).

A name that several servings claim names none of them: `<name>` alone is the same for servings
of one name in several namespaces (a client's own namespace is not in the request), and servings
may share an Ingress host (their paths differ). The activator cannot tell those apart, and says
which servings share the name rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True, order=True)
class ServingRef:
    """A serving: its namespace and name (its Deployment and Service have its name)."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Serving:
    """What the activator needs of a ModelServing."""

    ref: ServingRef
    uid: str
    auth_mode: str  # spec.auth.mode: apiKey, kubernetes or none
    hosts: frozenset[str]
    # Whether it may go to zero (concurrency autoscaling with minReplicas 0): the servings
    # whose requests the activator may ever hold.
    to_zero: bool = False


def service_hosts(ref: ServingRef, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[str]:
    """The DNS names of a serving's Service, shortest first."""
    name, namespace = ref.name, ref.namespace
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{cluster_domain}",
    ]


def serving_of(obj: Mapping[str, Any], cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Serving:
    """A ModelServing as the API server gives it (a dict) -> what the activator knows of it."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ref = ServingRef(meta.get("namespace") or "", meta.get("name") or "")
    names = service_hosts(ref, cluster_domain)
    ingress = spec.get("ingress") or {}
    if ingress.get("enabled") and ingress.get("host"):
        names.append(ingress["host"])
    autoscaling = spec.get("autoscaling") or {}
    return Serving(
        ref,
        meta.get("uid") or "",
        (spec.get("auth") or {}).get("mode") or "none",
        frozenset(normal_host(n) for n in names),
        bool(autoscaling.get("enabled"))
        and autoscaling.get("metric") == "concurrency"
        and autoscaling.get("minReplicas") == 0,
    )


def normal_host(host: str) -> str:
    """A Host header's name without its port, in lower case, without a trailing dot; an IPv6
    address keeps its brackets' content."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


@dataclass(frozen=True, slots=True)
class Shared:
    """A name several servings claim: it names none of them."""

    host: str
    servings: tuple[ServingRef, ...]

    def message(self) -> str:
        which = ", ".join(str(r) for r in self.servings)
        return (
            f"The host {self.host} names several servings ({which}); "
            "use one of a serving's own names, such as <name>.<namespace>.svc"
        )


class HostTable:
    """Host name -> serving, kept as servings come, change and go."""

    def __init__(self) -> None:
        self._servings: dict[ServingRef, Serving] = {}
        self._claims: dict[str, set[ServingRef]] = {}

    def __len__(self) -> int:
        return len(self._servings)

    def replace_all(self, servings: Iterable[Serving]) -> None:
        """The servings of a new list: what is not in it is gone."""
        self._servings.clear()
        self._claims.clear()
        for serving in servings:
            self.put(serving)

    def put(self, serving: Serving) -> None:
        self.remove(serving.ref)
        self._servings[serving.ref] = serving
        for host in serving.hosts:
            self._claims.setdefault(host, set()).add(serving.ref)

    def remove(self, ref: ServingRef) -> None:
        old = self._servings.pop(ref, None)
        if old is None:
            return
        for host in old.hosts:
            claims = self._claims.get(host)
            if claims is not None:
                claims.discard(ref)
                if not claims:
                    del self._claims[host]

    def refs(self) -> list[ServingRef]:
        return list(self._servings)

    def get(self, ref: ServingRef) -> Serving | None:
        return self._servings.get(ref)

    def lookup(self, host: str) -> Serving | Shared | None:
        """The serving a Host header names; Shared when several claim it; None when none does."""
        name = normal_host(host)
        claims = self._claims.get(name)
        if not claims:
            return None
        if len(claims) > 1:
            return Shared(name, tuple(sorted(claims)))
        return self._servings[next(iter(claims))]
