"""A serving's sidecar run here as the kubelet would run it in its pod: its Secret and ConfigMap
volumes projected into folders the way the kubelet's atomic writer does (the `items` of a volume
under their paths, files that are links into a `..data` folder swapped in one rename, so that a
Secret updated in place changes every file at once), and its rendered config aimed at them."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path
from typing import Any

from kubernetes import client


def _data(core: client.CoreV1Api, namespace: str, volume: dict[str, Any]) -> dict[str, bytes]:
    if "secret" in volume:
        secret = core.read_namespaced_secret(volume["secret"]["secretName"], namespace)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    cm = core.read_namespaced_config_map(volume["configMap"]["name"], namespace)
    return {k: v.encode() for k, v in (cm.data or {}).items()}


def project(core: client.CoreV1Api, namespace: str, volume: dict[str, Any], folder: Path) -> None:
    """Write (or update, atomically) a Secret or ConfigMap volume into `folder`."""
    source = volume.get("secret") or volume.get("configMap") or {}
    data = _data(core, namespace, volume)
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f"..{time.time_ns()}"
    stamp.mkdir()
    for item in items:
        (stamp / item["path"]).write_bytes(data[item["key"]])
    link = folder / "..data_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(stamp.name)
    os.replace(link, folder / "..data")  # the one rename that swaps every file
    for item in items:
        path = folder / item["path"]
        if not path.is_symlink():
            path.symlink_to(f"..data/{item['path']}")


class SidecarPod:
    """The sidecar container of a serving's Deployment, its volumes under `root`."""

    def __init__(self, core: client.CoreV1Api, namespace: str, deployment: Any, root: Path):
        self.core, self.namespace, self.root = core, namespace, root
        pod = deployment.spec.template.spec
        api = client.ApiClient()
        self.volumes = {v["name"]: v for v in api.sanitize_for_serialization(pod.volumes)}
        sidecar = next(c for c in pod.containers if c.name == "sidecar")
        self.mounts = api.sanitize_for_serialization(sidecar.volume_mounts)
        self.config_path = sidecar.command[sidecar.command.index("--config") + 1]
        self.folders: dict[str, Path] = {}
        for mount in self.mounts:
            local = root / mount["mountPath"].lstrip("/")
            volume = self.volumes[mount["name"]]
            if "subPath" in mount:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(_data(core, namespace, volume)[mount["subPath"]])
            elif "secret" in volume or "configMap" in volume:
                project(core, namespace, volume, local)
            else:  # an emptyDir; or the API-access volume, left empty: here the sidecar
                # reaches the API server through the kubeconfig (kube_access)
                local.mkdir(parents=True, exist_ok=True)
            self.folders[mount["mountPath"]] = local

    def sync(self, volume_name: str) -> None:
        """The kubelet's periodic sync of one volume: the Secret as it is now."""
        mount = next(m for m in self.mounts if m["name"] == volume_name)
        project(
            self.core, self.namespace, self.volumes[volume_name], self.folders[mount["mountPath"]]
        )

    def config_text(self) -> str:
        """The rendered sidecar config, each mount path replaced by the folder standing for it."""
        text = self.folders[self.config_path].read_text()
        paths = sorted(self.folders, key=len, reverse=True)
        pattern = re.compile(
            r"(?<![\w/.-])(" + "|".join(map(re.escape, paths)) + r")(?=/|\s|$)", re.M
        )
        return pattern.sub(lambda m: str(self.folders[m.group(1)]), text)
