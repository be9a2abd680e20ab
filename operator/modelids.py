"""Each serving's modelId: a stable integer, unique in the cluster (the Avro modelId).

Ids come from a counter in a ConfigMap of the operator's namespace, taken with
optimistic concurrency (the resourceVersion), so two operator replicas never
hand out the same id; the id is then kept in an annotation of the serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelserving import api
from modelserving.operator.kube import KubeClient, KubeError, object_path
from modelserving.operator.render import MODEL_ID_ANNOTATION

COUNTER_CONFIGMAP = "modelserving-model-ids"
COUNTER_KEY = "next"
ATTEMPTS = 50


def recorded_model_id(serving: Mapping[str, Any]) -> int | None:
    """The id the serving already has: its annotation, else its status (annotation lost)."""
    annotation = (serving["metadata"].get("annotations") or {}).get(MODEL_ID_ANNOTATION)
    if annotation and annotation.isdigit():
        return int(annotation)
    status_id = (serving.get("status") or {}).get("modelId")
    return int(status_id) if isinstance(status_id, int) else None


async def take_next_id(kube: KubeClient, namespace: str) -> int:
    """Take one id from the counter; a concurrent taker makes us retry, never share."""
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
                        "data": {COUNTER_KEY: "2"},
                    },
                )
                return 1
            taken = int(counter["data"][COUNTER_KEY])
            counter["data"][COUNTER_KEY] = str(taken + 1)
            # PUT with the resourceVersion we read: 409 if someone took an id meanwhile.
            await kube.request(
                "PUT", object_path("ConfigMap", COUNTER_CONFIGMAP, namespace), body=counter
            )
            return taken
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise KubeError(409, f"the modelId counter {namespace}/{COUNTER_CONFIGMAP} stayed contended")


async def assign_model_id(kube: KubeClient, namespace: str, name: str, counter_ns: str) -> int:
    """The serving's id, taking a new one only when the live object has none."""
    for _ in range(ATTEMPTS):
        serving = await kube.get(api.KIND, name, namespace)
        if serving is None:
            raise KubeError(404, f"{namespace}/{name} is gone")
        existing = recorded_model_id(serving)
        if existing is not None:
            if MODEL_ID_ANNOTATION in (serving["metadata"].get("annotations") or {}):
                return existing
            new_id = existing
        else:
            new_id = await take_next_id(kube, counter_ns)
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
    raise KubeError(409, f"could not annotate {namespace}/{name} with its modelId")
