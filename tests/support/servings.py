"""ModelServing resources as the tests write and read them through the API: a manifest, the
object as stored, its conditions, and reads of children that may be gone."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from modelserving import api


def serving_manifest(name: str, **spec) -> dict:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "mnist", "version": 1, "basePath": "s3://models/mnist"},
            "auth": {"mode": "apiKey", "apiKeys": {"secretName": f"{name}-keys"}},
            **spec,
        },
    }


def get_serving(objects, namespace: str, name: str) -> dict:
    return objects.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)


def condition(serving: dict, kind: str) -> dict:
    for cond in (serving.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond
    return {}


def is_ready(objects, namespace: str, name: str, generation: int = 1) -> dict | None:
    serving = get_serving(objects, namespace, name)
    status = serving.get("status") or {}
    ready = condition(serving, "Ready").get("status") == "True"
    return serving if ready and status.get("observedGeneration") == generation else None


def read_or_none(read, *args):
    try:
        return read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
