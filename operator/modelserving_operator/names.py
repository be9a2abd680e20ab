"""The names and labels of a serving's children, and the metadata that ties each to its serving.

Every renderer names its children here, and the handlers find a child's serving by
the same labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelserving import api
from modelserving_operator.spec import ServingSpec

Manifest = dict[str, Any]  # a child, as the API server takes it

CONFIG_CHECKSUM_ANNOTATION = f"{api.GROUP}/config-checksum"
# The digest of the Secrets and ConfigMaps the pods read at start (env_sources). Its name
# predates ConfigMaps; renaming it would roll every serving's pods at an upgrade.
SECRETS_CHECKSUM_ANNOTATION = f"{api.GROUP}/secrets-checksum"
# Cluster-scoped children (the auth ClusterRoleBinding) cannot carry an ownerReference
# to a namespaced serving, so they name their serving in these labels instead.
LABEL_SERVING_NAMESPACE = f"{api.GROUP}/serving-namespace"
LABEL_SERVING_NAME = f"{api.GROUP}/serving-name"
# ... and the uid of the serving they were made for, so that the deletion of a serving does
# not take the binding of one made anew under its name.
LABEL_SERVING_UID = f"{api.GROUP}/serving-uid"


def labels(spec: ServingSpec) -> dict[str, str]:
    return {
        **selector_labels(spec),
        api.LABEL_COMPONENT: api.SERVING_COMPONENT,
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
        api.LABEL_PART_OF: api.PART_OF,
    }


def selector_labels(spec: ServingSpec) -> dict[str, str]:
    return {api.LABEL_NAME: api.SERVING_APP_NAME, api.LABEL_INSTANCE: spec.name}


def metadata(spec: ServingSpec, name: str) -> dict[str, Any]:
    """A namespaced child's metadata: its name, the labels, and the serving as its owner."""
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": labels(spec),
        "ownerReferences": [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": spec.name,
                "uid": spec.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def owned_by(child: Mapping[str, Any], spec: ServingSpec) -> bool:
    """Whether an object found under a child's name is the serving's own: a namespaced one
    names the serving's uid among its ownerReferences; a cluster-scoped one (which cannot)
    names the serving in its labels. Anything else is someone else's, never written."""
    meta = child.get("metadata") or {}
    if not meta.get("namespace"):
        found = meta.get("labels") or {}
        return (
            found.get(LABEL_SERVING_NAMESPACE) == spec.namespace
            and found.get(LABEL_SERVING_NAME) == spec.name
        )
    return any(ref.get("uid") == spec.uid for ref in meta.get("ownerReferences") or [])


def made_for(child: Mapping[str, Any], spec: ServingSpec) -> bool:
    """Whether a cluster-scoped child is this very serving's (owned_by), not one made for
    another of its name, deleted before it or made after it: its uid label says this serving's
    uid (or nothing, made before the label was)."""
    uid = ((child.get("metadata") or {}).get("labels") or {}).get(LABEL_SERVING_UID)
    return owned_by(child, spec) and uid in (None, spec.uid)


def tfserving_configmap_name(spec: ServingSpec, digest: str) -> str:
    """TF Serving's files as read at start: named by their content (render_config)."""
    return f"{spec.name}-tfserving-{digest}"


def sidecar_configmap_name(spec: ServingSpec, digest: str) -> str:
    """The sidecar's settings as read at start: named by their content (render_config)."""
    return f"{spec.name}-sidecar-{digest}"


def versions_configmap_name(spec: ServingSpec) -> str:
    """The files that move traffic between listed versions, changed in place (render_config)."""
    return f"{spec.name}-versions"


def service_account_name(spec: ServingSpec) -> str:
    return f"{spec.name}-sidecar"


def log_status_role_binding_name(spec: ServingSpec) -> str:
    return f"{spec.name}-sidecar-log-status"


def cluster_role_binding_name(spec: ServingSpec) -> str:
    return f"modelserving:{spec.namespace}:{spec.name}"
