"""Each serving's modelId: a stable integer, unique in the cluster (the Avro modelId).

Ids come from a counter in a ConfigMap of the operator's namespace, taken with
optimistic concurrency (the resourceVersion), so two operator replicas never
hand out the same id; the id is then written in an annotation of the serving.

Only the operator issues ids, so the annotation is never taken at its word: a manifest
copied with it (`kubectl get -o yaml`, a GitOps repository) keeps it, and whoever may edit a
serving may write any number in it, another serving's id among them. An id is the serving's
when the operator has said so where no one else writes: the serving's status (the status
subresource, which the users' roles do not grant and which a create or a copy never sets),
or, until the status is written, this process's own record of the ids it handed out, by the
serving's uid. Anything else gets a fresh id, and the annotation is written over. The cost:
an operator that stops between writing a new serving's annotation and its status (a moment
in its first reconcile) gives it another id on its next start, as it would any copy.
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


def issued_model_id(serving: Mapping[str, Any], issued: Mapping[str, int]) -> int | None:
    """The id the operator issued to this serving: its status's modelId, else the id `issued`
    (this process's record, by uid) holds for it; never the annotation alone."""
    status_id = (serving.get("status") or {}).get("modelId")
    if isinstance(status_id, int) and not isinstance(status_id, bool):
        return status_id
    return issued.get(serving["metadata"].get("uid", ""))


def annotated(serving: Mapping[str, Any], model_id: int) -> bool:
    """Whether the serving's annotation says `model_id`, so that nothing is to be written."""
    annotations = serving["metadata"].get("annotations") or {}
    return bool(annotations.get(MODEL_ID_ANNOTATION) == str(model_id))


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
        # The ids handed out, by the serving's uid, until its status holds its id: the watch
        # cache may show a serving with the annotation just written and no status yet.
        self._issued: dict[str, int] = {}

    def recorded(self, serving: Mapping[str, Any]) -> int | None:
        """The id the operator issued to the serving (issued_model_id), or None: it needs one."""
        model_id = issued_model_id(serving, self._issued)
        if (serving.get("status") or {}).get("modelId") is not None:
            self._issued.pop(serving["metadata"].get("uid", ""), None)  # the status holds it
        return model_id

    async def take(self, uid: str) -> int:
        """A fresh id for the serving of this uid, recorded as issued to it."""
        self._waiting += 1
        try:
            async with self._lock:
                if not self._free:
                    count = min(max(self._waiting, self._pending()), MAX_BLOCK)
                    first = await take_ids(self._kube, self._namespace, count)
                    self._free.extend(range(first, first + count))
                self._issued[uid] = model_id = self._free.popleft()
                return model_id
        finally:
            self._waiting -= 1


async def assign_model_id(kube: KubeClient, ids: ModelIds, serving: Mapping[str, Any]) -> int:
    """The serving's id, taking a new one only when the operator issued it none, and written
    in its annotation unless that says it already (one write). `serving` is the operator's
    view of it; when that is stale (409), the live object is read and tried again (the id
    taken stays the serving's, by its uid: a conflict does not cost an id)."""
    namespace, name = serving["metadata"]["namespace"], serving["metadata"]["name"]
    for _ in range(ATTEMPTS):
        new_id = ids.recorded(serving)
        if new_id is not None and annotated(serving, new_id):
            return new_id
        if new_id is None:
            new_id = await ids.take(serving["metadata"]["uid"])
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
