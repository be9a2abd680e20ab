"""The operator's watch caches: what kopf's indexes (registered in handlers.py) keep of the
servings, their children and their pods, and how a reconcile and the periodic checks read them.

Every index maps a serving's (namespace, name) (or another key, named beside it) to what the
operator keeps of the objects of that key; kopf fills them from its watch streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from modelserving import api
from modelserving_operator.names import LABEL_SERVING_NAME, LABEL_SERVING_NAMESPACE
from modelserving_operator.runtime.cached import CachedObject
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
# The serving's pods are watched, not owned: their annotations feed the status (LoggingReady,
# ModelReady, AuthReady, status.versions).
PODS_INDEX = "serving_pods"
# Which servings' pods read each Secret and ConfigMap at start (env_sources), so that a change
# of one (pod_env.checks reads them by name; they are not watched) marks only those.
SOURCE_READERS_INDEX = "source_readers"
# The servings whose status holds each modelId: ids above them are the fresh ones, and an id
# two hold is kept by the first made (modelids).
MODEL_IDS_INDEX = "model_ids"
WATCHED_PLURALS = (api.PLURAL, "pods", *(plural for _, _, plural, _ in CHILD_RESOURCES))
INDEXES = (
    SERVINGS_INDEX,
    PODS_INDEX,
    SOURCE_READERS_INDEX,
    MODEL_IDS_INDEX,
    *(f"children_{plural}" for _, _, plural, _ in CHILD_RESOURCES),
)


def children_index(plural: str) -> str:
    return f"children_{plural}"


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


class WatchCaches:
    """kopf's indexes, as its handlers are given them (kopf_internals.live_indexes), read
    outside the handlers: by the workers' reconciles, the checks and the metrics."""

    def __init__(self) -> None:
        self.indexes: Mapping[str, Any] = {}  # set by the handlers, from the first event

    def serving(self, key: Key) -> dict[str, Any] | None:
        cached = next(iter(self.indexes[SERVINGS_INDEX].get(key, [])), None)
        return cached.parsed() if cached is not None else None

    def children(self, key: Key) -> list[CachedObject]:
        return [
            child
            for _, _, plural, _ in CHILD_RESOURCES
            for child in self.indexes[children_index(plural)].get(key, [])
        ]

    def pods(self, key: Key) -> list[dict[str, Any]]:
        return list(self.indexes[PODS_INDEX].get(key, []))

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
