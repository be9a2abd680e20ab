"""The sidecar's own ServiceAccount and what it may do: TokenReviews and SubjectAccessReviews
(auth mode kubernetes), and patching its pod's model report and log status. Pure functions of
the spec and the operator's settings, which name the ClusterRoles bound."""

from __future__ import annotations

from typing import Any

from modelserving_operator.names import (
    LABEL_SERVING_NAME,
    LABEL_SERVING_NAMESPACE,
    LABEL_SERVING_UID,
    Manifest,
    cluster_role_binding_name,
    labels,
    log_status_role_binding_name,
    metadata,
    service_account_name,
)
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec


def render_service_account(spec: ServingSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(spec, service_account_name(spec)),
    }


def _sidecar_subjects(spec: ServingSpec) -> list[dict[str, Any]]:
    return [
        {
            "kind": "ServiceAccount",
            "name": service_account_name(spec),
            "namespace": spec.namespace,
        }
    ]


def render_cluster_role_binding(spec: ServingSpec, settings: OperatorSettings) -> Manifest:
    """Lets the sidecar call TokenReview and SubjectAccessReview (auth mode kubernetes)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": cluster_role_binding_name(spec),
            "labels": {
                **labels(spec),
                LABEL_SERVING_NAMESPACE: spec.namespace,
                LABEL_SERVING_NAME: spec.name,
                LABEL_SERVING_UID: spec.uid,
            },
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": settings.sidecar_auth_cluster_role,
        },
        "subjects": _sidecar_subjects(spec),
    }


def render_log_status_role_binding(spec: ServingSpec, settings: OperatorSettings) -> Manifest:
    """Lets the sidecar patch pods/status (its pod's model report and log-status annotations)
    in its namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(spec, log_status_role_binding_name(spec)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": settings.sidecar_log_status_cluster_role,
        },
        "subjects": _sidecar_subjects(spec),
    }
