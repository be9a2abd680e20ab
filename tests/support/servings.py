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


def configmaps_of(template) -> list[str]:
    """The ConfigMaps a pod template mounts (as a volume or in a projected one), by name; a
    client model's template or a dict's."""
    spec = template.spec if hasattr(template, "spec") else template["spec"]
    volumes = spec.volumes if hasattr(spec, "volumes") else spec.get("volumes") or []
    names = []
    for volume in volumes or []:
        volume = volume.to_dict() if hasattr(volume, "to_dict") else volume
        sources = (volume.get("projected") or {}).get("sources") or [volume]
        names += [
            s["config_map" if "config_map" in s else "configMap"]["name"]
            for s in sources
            if s.get("config_map") or s.get("configMap")
        ]
    return names


def config_file(core, apps, namespace: str, name: str, key: str) -> str | None:
    """A file of the serving's config as its Deployment's pod template mounts it (the
    operator names the ConfigMaps pods read at start by their content); None while there is
    no Deployment or no such file."""
    deployment = read_or_none(apps.read_namespaced_deployment, name, namespace)
    if deployment is None:
        return None
    for cm_name in configmaps_of(deployment.spec.template):
        cm = read_or_none(core.read_namespaced_config_map, cm_name, namespace)
        if cm is not None and key in (cm.data or {}):
            return str(cm.data[key])
    return None
