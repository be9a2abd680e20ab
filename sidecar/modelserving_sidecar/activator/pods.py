"""Which pods of each serving can take a request, from the watch of serving pods: a pod is
usable when its Ready condition is True, it has an address, and it is not being deleted. Each
serving's usable pods are taken in turn (round robin).

The serving of a pod is its namespace and its app.kubernetes.io/instance label, as the operator
labels the pods of a serving's Deployment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from modelserving.api import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_NAME,
    SERVING_APP_NAME,
    SERVING_COMPONENT,
)
from modelserving_sidecar.activator.hosts import ServingRef

# The watch's label selector: the pods of servings, no other (not the chart's own).
SERVING_PODS = f"{LABEL_NAME}={SERVING_APP_NAME},{LABEL_COMPONENT}={SERVING_COMPONENT}"


def serving_of_pod(pod: Mapping[str, Any]) -> ServingRef | None:
    meta = pod.get("metadata") or {}
    instance = (meta.get("labels") or {}).get(LABEL_INSTANCE)
    if not instance:
        return None
    return ServingRef(meta.get("namespace") or "", instance)


def usable_address(pod: Mapping[str, Any]) -> str | None:
    """The pod's address when it can take a request: Ready, addressed, not being deleted."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return None
    address = status.get("podIP")
    if not address:
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return str(address) if ready else None


class ReadyPods:
    """The usable pods of every serving, by pod name, with a turn for each serving.

    `became_usable` is called with a serving whose first usable pod has just come (from none):
    what it held can go."""

    def __init__(self, became_usable: Callable[[ServingRef], None]) -> None:
        self._became_usable = became_usable
        self._pods: dict[ServingRef, dict[str, str]] = {}
        self._turn: dict[ServingRef, int] = {}

    def pick(self, ref: ServingRef) -> str | None:
        """The next usable pod's address of a serving, in turn; None when it has none."""
        pods = self._pods.get(ref)
        if not pods:
            return None
        turn = self._turn.get(ref, 0)
        self._turn[ref] = turn + 1
        addresses = list(pods.values())
        return addresses[turn % len(addresses)]

    def count(self, ref: ServingRef) -> int:
        return len(self._pods.get(ref) or ())

    def replace_all(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """The pods of a new list: what is not in it is gone."""
        had = {ref for ref, found in self._pods.items() if found}
        self._pods.clear()
        for pod in pods:
            self._apply(pod, deleted=False)
        for ref, found in self._pods.items():
            if found and ref not in had:
                self._became_usable(ref)

    def update(self, pod: Mapping[str, Any], deleted: bool = False) -> None:
        """A watch event's pod (ADDED, MODIFIED, or DELETED when `deleted`)."""
        ref = serving_of_pod(pod)
        if ref is None:
            return
        before = self.count(ref)
        self._apply(pod, deleted)
        if before == 0 and self.count(ref) > 0:
            self._became_usable(ref)

    def _apply(self, pod: Mapping[str, Any], deleted: bool) -> None:
        ref = serving_of_pod(pod)
        if ref is None:
            return
        name = (pod.get("metadata") or {}).get("name") or ""
        address = None if deleted else usable_address(pod)
        pods = self._pods.setdefault(ref, {})
        if address is None:
            pods.pop(name, None)
            if not pods:
                del self._pods[ref]
                self._turn.pop(ref, None)
        else:
            pods[name] = address
