"""How the serving is reached: its Service, the NetworkPolicy that opens only the sidecar, and
an optional Ingress. Pure functions of the spec."""

from __future__ import annotations

from typing import Any

from modelserving import api
from modelserving_operator.names import Manifest, metadata, selector_labels
from modelserving_operator.spec import ServingSpec


def render_service(spec: ServingSpec) -> Manifest:
    ports: list[dict[str, Any]] = [
        {"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}
    ]
    if spec.sidecar.grpc.enabled:
        # TF Serving's gRPC API through the sidecar, on TF Serving's own port number.
        ports.append(
            {
                "name": "grpc",
                "port": api.SIDECAR_GRPC_PORT,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, spec.name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(spec), "ports": ports},
    }


def render_network_policy(spec: ServingSpec) -> Manifest:
    """Only the sidecar's ports (REST, and gRPC when it serves it) are open to other pods; TF
    Serving answers inside the pod only."""
    ports = [{"protocol": "TCP", "port": api.SIDECAR_PORT}]
    if spec.sidecar.grpc.enabled:
        ports.append({"protocol": "TCP", "port": api.SIDECAR_GRPC_PORT})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": ports}],
        },
    }


def ingress_paths(spec: ServingSpec) -> list[str]:
    model = spec.model.name
    paths = [f"/v1/models/{model}"]
    project = spec.project_id
    if project:
        paths += [
            f"/hopsworks-api/api/project/{project}/models/{model}",
            f"/hopsworks-api/api/project/{project}/inference/models/{model}",
        ]
    return paths


def render_ingress(spec: ServingSpec) -> Manifest:
    ingress = spec.ingress
    backend = {"service": {"name": spec.name, "port": {"number": spec.service.port}}}
    # ImplementationSpecific: a Prefix path would not match /v1/models/NAME:predict, whose
    # last segment is "NAME:predict"; controllers treat these as string prefixes.
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": p, "pathType": "ImplementationSpecific", "backend": backend}
                for p in ingress_paths(spec)
            ]
        }
    }
    if ingress.host:
        rule = {"host": ingress.host, **rule}
    meta = metadata(spec, spec.name)
    if ingress.annotations:
        meta["annotations"] = dict(ingress.annotations)
    ingress_spec: dict[str, Any] = {"rules": [rule]}
    if ingress.class_name:
        ingress_spec["ingressClassName"] = ingress.class_name
    if ingress.tls:
        ingress_spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls.secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": ingress_spec,
    }
