"""What the operator's unit tests share: a serving's body and spec, the operator's settings, an
API server that keeps objects and records the writes made to it, and a reconcile of a
serving's children against it. (Integration tests talk to the real API server instead.)"""

from __future__ import annotations

import copy
from typing import Any, cast

from modelserving import api
from modelserving_operator.kube import KubeClient, KubeError
from modelserving_operator.reconcile import Reconciler, _apply_children
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec

Key = tuple[str, str]

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")


def mnist(**spec: Any) -> ServingSpec:
    return ServingSpec.from_body(mnist_body(**spec))


def mnist_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
        "spec": {
            "model": {"version": 1, "basePath": "s3://models/mnist"},
            "auth": {"mode": "apiKey", "apiKeys": {"secretName": "mnist-keys"}},
            **spec,
        },
    }


class ApiServer:
    """What the operator's client reaches: objects by (kind, name), and the writes made."""

    def __init__(self, objects: dict[Key, dict[str, Any]]) -> None:
        self.objects = objects
        self.writes: list[tuple[str, Key]] = []

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.objects:
            raise KubeError(409, f"{key[0]} {key[1]} already exists")
        self.writes.append(("create", key))
        self.objects[key] = copy.deepcopy(manifest)
        return self.objects[key]

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self.objects.get((kind, name))

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.writes.append(("apply", key))
        self.objects[key] = copy.deepcopy(manifest)
        return self.objects[key]

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.writes.append(("delete", (kind, name)))
        self.objects.pop((kind, name), None)


async def apply_children(
    server: ApiServer, live: dict[Key, dict[str, Any]], spec: ServingSpec | None = None
) -> Any:
    """One reconcile's write of mnist's children against `server`, with `live` as the
    operator's cache of them."""
    spec = spec or mnist()
    rec = Reconciler(
        kube=cast(KubeClient, server),
        settings=SETTINGS,
        topics=cast(Any, None),
        model_ids=cast(Any, None),
    )
    body = mnist_body()
    return await _apply_children(rec, body, spec, 7, None, cast(Any, live), None)
