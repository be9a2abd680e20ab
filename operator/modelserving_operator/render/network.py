"""How the serving is reached: its Service, the endpoints of a serving that may go to zero, the
NetworkPolicy that opens only the sidecar, and an optional Ingress. Pure functions of the spec
(and, for the endpoints, of the addresses that answer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelserving import api
from modelserving_operator.names import Manifest, metadata, selector_labels
from modelserving_operator.spec import ServingSpec

# The EndpointSlice label that says who keeps a slice: the EndpointSlice controller leaves the
# slices of a Service without a selector to whoever names itself here.
SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_MANAGED_BY = "operator.modelserving.io"
SLICE_SERVICE_LABEL = "kubernetes.io/service-name"


def render_service(spec: ServingSpec) -> Manifest:
    """The serving's Service. One that may go to zero has no selector: its endpoints are the
    operator's (render_endpoint_slice), which points them at the activator while no pod is
    ready, so that a request at zero is held and wakes the serving rather than refused."""
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
    service_spec: dict[str, Any] = {"type": "ClusterIP", "ports": ports}
    if not spec.autoscaling.to_zero:
        service_spec["selector"] = selector_labels(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, spec.name),
        "spec": service_spec,
    }


@dataclass(frozen=True)
class Endpoint:
    """An address the serving's Service sends to: a ready pod of the serving, or an activator's."""

    address: str
    pod: str  # the pod's name
    namespace: str  # the pod's namespace (the activator's is the operator's)


def render_endpoint_slice(spec: ServingSpec, endpoints: Sequence[Endpoint]) -> Manifest:
    """The endpoints of a serving that may go to zero, as the EndpointSlice controller would
    write them for its Service's selector: its ready pods (or, at zero, the activator's), on
    the Service's ports by name. In address order, so that the same endpoints are the same
    slice."""
    meta = metadata(spec, spec.name)
    meta["labels"] = {
        **meta["labels"],
        SLICE_SERVICE_LABEL: spec.name,
        SLICE_MANAGED_BY_LABEL: SLICE_MANAGED_BY,
    }
    ports: list[dict[str, Any]] = [{"name": "http", "port": api.SIDECAR_PORT, "protocol": "TCP"}]
    if spec.sidecar.grpc.enabled:
        ports.append(
            {
                "name": "grpc",
                "port": api.SIDECAR_GRPC_PORT,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    ordered = sorted(endpoints, key=lambda e: e.address)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv6" if ordered and ":" in ordered[0].address else "IPv4",
        "endpoints": [
            {
                "addresses": [e.address],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "targetRef": {"kind": "Pod", "namespace": e.namespace, "name": e.pod},
            }
            for e in ordered
        ],
        "ports": ports,
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
