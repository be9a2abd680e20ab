"""Each serving's modelId: a stable integer, unique in the cluster (the Avro modelId).

Ids come from a counter in a ConfigMap of the operator's namespace, taken with
optimistic concurrency (the resourceVersion), so two operator replicas never
hand out the same id; the id is then kept in an annotation of the serving.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from typing import Any

from modelserving import api
from modelserving.operator.kube import KubeClient, KubeError, object_path
from modelserving.operator.names import MODEL_ID_ANNOTATION

COUNTER_CONFIGMAP = "modelserving-model-ids"
COUNTER_KEY = "next"
ATTEMPTS = 50
MAX_BLOCK = 100  # ids taken of the counter in one write


def recorded_model_id(serving: Mapping[str, Any]) -> int | None:
    """The id the serving already has: its annotation, else its status (annotation lost)."""
    annotation = (serving["metadata"].get("annotations") or {}).get(MODEL_ID_ANNOTATION)
    if annotation and annotation.isdigit():
        return int(annotation)
    status_id = (serving.get("status") or {}).get("modelId")
    return int(status_id) if isinstance(status_id, int) else None


async def take_ids(kube: KubeClient, namespace: str, count: int = 1) -> int:
    """Take `count` consecutive ids from the counter, returning the first; a concurrent taker
    (another replica) makes us retry, never share."""
    for _ in range(ATTEMPTS):
        counter = await kube.get("ConfigMap", COUNTER_CONFIGMAP, namespace)
        try:
            if counter is None:
                await kube.request(
                    "POST",
                    object_path("ConfigMap", None, namespace),
                    body={
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": COUNTER_CONFIGMAP, "namespace": namespace},
                        "data": {COUNTER_KEY: str(1 + count)},
                    },
                )
                return 1
            taken = int(counter["data"][COUNTER_KEY])
            counter["data"][COUNTER_KEY] = str(taken + count)
            # PUT with the resourceVersion we read: 409 if someone took an id meanwhile.
            await kube.request(
                "PUT", object_path("ConfigMap", COUNTER_CONFIGMAP, namespace), body=counter
            )
            return taken
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise KubeError(409, f"the modelId counter {namespace}/{COUNTER_CONFIGMAP} stayed contended")


class ModelIds:
    """Hands out ids to the servings that need one, from blocks taken of the counter: the
    servings that need one at the same moment (a thousand applied at once) share one counter
    write, instead of each racing the others for it. `pending` says how many servings are known
    to need an id (those the watch cache holds without one): a block covers them, not only the
    few whose reconciles wait for an id right now. Ids of a block not handed out when the
    operator stops are never used: ids stay unique, with gaps."""

    def __init__(
        self, kube: KubeClient, namespace: str, pending: Callable[[], int] = lambda: 0
    ) -> None:
        self._kube, self._namespace = kube, namespace
        self._pending = pending
        self._lock = asyncio.Lock()
        self._free: collections.deque[int] = collections.deque()
        self._waiting = 0

    async def take(self) -> int:
        self._waiting += 1
        try:
            async with self._lock:
                if not self._free:
                    count = min(max(self._waiting, self._pending()), MAX_BLOCK)
                    first = await take_ids(self._kube, self._namespace, count)
                    self._free.extend(range(first, first + count))
                return self._free.popleft()
        finally:
            self._waiting -= 1


async def assign_model_id(kube: KubeClient, ids: ModelIds, serving: Mapping[str, Any]) -> int:
    """The serving's id, taking a new one only when the object has none. `serving` is the
    operator's view of it; when that is stale (409), the live object is read and tried again."""
    namespace, name = serving["metadata"]["namespace"], serving["metadata"]["name"]
    taken: int | None = None  # kept through a retry, so a conflict does not cost an id
    for _ in range(ATTEMPTS):
        existing = recorded_model_id(serving)
        if existing is not None:
            if MODEL_ID_ANNOTATION in (serving["metadata"].get("annotations") or {}):
                return existing
            new_id = existing
        else:
            new_id = taken = taken if taken is not None else await ids.take()
        patch = {
            "metadata": {
                "resourceVersion": serving["metadata"]["resourceVersion"],
                "annotations": {MODEL_ID_ANNOTATION: str(new_id)},
            }
        }
        try:
            await kube.merge_patch(api.KIND, name, namespace, patch)
            return new_id
        except KubeError as exc:
            if exc.status != 409:  # the serving changed meanwhile: read it again
                raise
        live = await kube.get(api.KIND, name, namespace)
        if live is None:
            raise KubeError(404, f"{namespace}/{name} is gone")
        serving = live
    raise KubeError(409, f"could not annotate {namespace}/{name} with its modelId")
