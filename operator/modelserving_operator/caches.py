"""The operator's watch caches: what kopf's indexes (registered in handlers.py) keep of the
servings, what the operator's own watch streams (runtime/watches) keep of their children and
their pods, and how a reconcile and the periodic checks read them.

Every index maps a serving's (namespace, name) (or another key, named beside it) to what the
operator keeps of the objects of that key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from modelserving import api
from modelserving_operator.names import LABEL_SERVING_NAME, LABEL_SERVING_NAMESPACE
from modelserving_operator.render.network import SLICE_MANAGED_BY, SLICE_MANAGED_BY_LABEL
from modelserving_operator.runtime.cached import CachedObject
from modelserving_operator.runtime.watches import ObjectIndex, Watched
from modelserving_operator.runtime.workqueue import Key
from modelserving_operator.status.model_report import tfserving_exited
from modelserving_sidecar.log.status import ANNOTATION as LOG_STATUS_ANNOTATION

MANAGED = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
# (group, version, plural, kind) of every kind of child.
CHILD_RESOURCES = [
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "services", "Service"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("apps", "v1", "deployments", "Deployment"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    # Of a serving that may go to zero (render_endpoint_slice): written in a step of its own.
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding"),
]
SERVINGS_INDEX = "servings"
# Which servings' pods read each Secret and ConfigMap at start (env_sources), so that a change
# of one (pod_env.checks reads them by name; they are not watched) marks only those.
SOURCE_READERS_INDEX = "source_readers"
# The servings whose status holds each modelId: ids above them are the fresh ones, and an id
# two hold is kept by the first made (modelids).
MODEL_IDS_INDEX = "model_ids"
# kopf's indexes, of the servings; the children and pods are the operator's own streams'.
INDEXES = (SERVINGS_INDEX, SOURCE_READERS_INDEX, MODEL_IDS_INDEX)


def serving_of(body: Mapping[str, Any]) -> Key | None:
    """The serving a child or pod is of, by its labels (a cluster-scoped child names the
    serving's namespace in a label of its own)."""
    labels = body["metadata"].get("labels") or {}
    if body["metadata"].get("namespace"):
        name = labels.get(api.LABEL_INSTANCE)
        return (body["metadata"]["namespace"], name) if name else None
    namespace, name = (
        labels.get(LABEL_SERVING_NAMESPACE),
        labels.get(LABEL_SERVING_NAME),
    )
    return (namespace, name) if namespace and name else None


def pod_summary(name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the status and the autoscaler need of a serving's pod: its name, whether it is
    Ready, its address, whether it is going, its sidecar's reports (the log's health, what TF
    Serving says of the model), and how its TF Serving container last ended if the kubelet
    restarted it."""
    annotations = body["metadata"].get("annotations") or {}
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return {
        "name": name,
        "ready": ready,
        # Where the concurrency autoscaler reads the pod's sidecar (autoscaler/readings).
        "ip": (body.get("status") or {}).get("podIP"),
        "deleting": bool(body["metadata"].get("deletionTimestamp")),
        "logStatus": annotations.get(LOG_STATUS_ANNOTATION),
        "modelReport": annotations.get(api.MODEL_REPORT_ANNOTATION),
        "tfservingExited": tfserving_exited(body.get("status")),
    }


def watched_kinds() -> list[Watched]:
    """What the operator's own streams watch: every kind of child, and the servings' pods (a
    cached child, a pod's summary, each under its serving's key)."""
    managed = f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"
    kinds = [
        Watched(
            group,
            version,
            plural,
            kind,
            # The EndpointSlice controller copies a Service's labels onto the slices it keeps
            # for it: ours alone are watched, not one slice more per serving.
            f"{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGED_BY}"
            if plural == "endpointslices"
            else managed,
            namespaced=kind != "ClusterRoleBinding",
            keep=lambda body, kind=kind: CachedObject.of(body, kind),  # type: ignore[misc]
            key_of=serving_of,
        )
        for group, version, plural, kind in CHILD_RESOURCES
    ]
    # The serving's pods are watched, not owned: their annotations feed the status
    # (LoggingReady, ModelReady, AuthReady, status.versions).
    pods = Watched(
        "",
        "v1",
        "pods",
        "Pod",
        managed,
        namespaced=True,
        keep=lambda body: pod_summary(body["metadata"]["name"], body),
        key_of=serving_of,
    )
    return [*kinds, pods]


class WatchCaches:
    """kopf's indexes of the servings, as its handlers are given them
    (kopf_internals.live_indexes), and the operator's own indexes of their children and pods
    (runtime/watches), read outside the handlers: by the workers' reconciles, the checks and
    the metrics."""

    def __init__(self) -> None:
        self.indexes: Mapping[str, Any] = {}  # set by the handlers, from the first event
        self.own: Mapping[str, ObjectIndex] = {}  # by plural: set when the streams are made

    def has_serving(self, key: Key) -> bool:
        return key in (self.indexes.get(SERVINGS_INDEX) or {})

    def serving(self, key: Key) -> dict[str, Any] | None:
        cached = next(iter(self.indexes[SERVINGS_INDEX].get(key, [])), None)
        return cached.parsed() if cached is not None else None

    def children(self, key: Key) -> list[CachedObject]:
        return [
            child
            for _, _, plural, _ in CHILD_RESOURCES
            if (index := self.own.get(plural)) is not None
            for child in index.get(key, [])
        ]

    def pods(self, key: Key) -> list[dict[str, Any]]:
        index = self.own.get("pods")
        return list(index.get(key, [])) if index is not None else []

    def servings(self) -> Iterator[dict[str, Any]]:
        """Every serving the cache holds, parsed."""
        for _, cached in self.cached_servings():
            yield cached.parsed()

    def cached_servings(self) -> Iterator[tuple[Key, CachedObject]]:
        """Every serving the cache holds, by key, as kept (parsed when needed)."""
        for key, store in list((self.indexes.get(SERVINGS_INDEX) or {}).items()):
            for cached in store:
                yield key, cached

    def source_readers(self) -> Mapping[tuple[str, str, str], Iterable[str]]:
        """Which servings read each Secret and ConfigMap (pod_env.checks.Readers), as the
        servings' index says now."""
        readers: Mapping[tuple[str, str, str], Iterable[str]] = (
            self.indexes.get(SOURCE_READERS_INDEX) or {}
        )
        return readers

    def model_id_holders(self, model_id: int) -> Iterable[Mapping[str, str]]:
        """The servings whose status holds `model_id` (modelids.model_id_claim)."""
        holders: Iterable[Mapping[str, str]] = self.indexes.get(MODEL_IDS_INDEX, {}).get(
            model_id, ()
        )
        return holders

    def model_ids_in_use(self) -> Iterable[int]:
        in_use: Iterable[int] = self.indexes.get(MODEL_IDS_INDEX, {}).keys()
        return in_use
