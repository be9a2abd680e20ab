"""spec.sidecar.grpc as the operator renders it: the sidecar's gRPC port and message limit, and,
with gRPC off, no gRPC port anywhere (sidecar config, container, Service, NetworkPolicy)."""

from __future__ import annotations

from typing import Any

import yaml

from modelserving import api
from modelserving_operator.names import CONFIG_CHECKSUM_ANNOTATION
from modelserving_operator.render.manifests import render_children
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.config import GrpcConfig, SidecarConfig, parse_config

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")
MiB = 1024 * 1024


def children(**sidecar: Any) -> dict[str, dict[str, Any]]:
    """The serving's children by kind; the sidecar's ConfigMap as "SidecarConfigMap"."""
    body = {
        "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
        "spec": {
            "model": {"version": 1, "basePath": "s3://models/mnist"},
            "auth": {"mode": "none"},
            "sidecar": sidecar,
        },
    }
    by_kind: dict[str, dict[str, Any]] = {}
    for child in render_children(ServingSpec.from_body(body), SETTINGS, 17):
        kind = child["kind"]
        if kind == "ConfigMap" and "sidecar.yaml" in child["data"]:
            kind = "SidecarConfigMap"
        by_kind[kind] = child
    return by_kind


def sidecar_configs(**sidecar: Any) -> tuple[SidecarConfig, dict[str, dict[str, Any]]]:
    """The sidecar's config as the sidecar parses it, and the serving's children."""
    rendered = children(**sidecar)
    text = rendered["SidecarConfigMap"]["data"]["sidecar.yaml"]
    return parse_config(yaml.safe_load(text)), rendered


def pod_ports(rendered: dict[str, dict[str, Any]]) -> list[str]:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == api.SIDECAR_CONTAINER)
    return [p["name"] for p in sidecar["ports"]]


def test_by_default_the_sidecar_serves_grpc_on_8500_with_a_64_mib_limit() -> None:
    config, rendered = sidecar_configs()

    assert config.grpc == GrpcConfig(
        port=api.SIDECAR_GRPC_PORT,
        upstream=f"127.0.0.1:{api.TFSERVING_GRPC_PORT}",
        max_message_bytes=64 * MiB,
    )
    assert pod_ports(rendered) == ["http", "grpc"]
    service_ports = rendered["Service"]["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service_ports] == [
        ("http", api.SIDECAR_PORT, "http"),
        ("grpc", api.SIDECAR_GRPC_PORT, "grpc"),
    ]
    assert [p["port"] for p in rendered["NetworkPolicy"]["spec"]["ingress"][0]["ports"]] == [
        api.SIDECAR_PORT,
        api.SIDECAR_GRPC_PORT,
    ]


def test_the_specs_message_limit_reaches_the_sidecar() -> None:
    config, _ = sidecar_configs(grpc={"maxMessageBytes": 8 * MiB})

    assert config.grpc.max_message_bytes == 8 * MiB
    assert config.grpc.port == api.SIDECAR_GRPC_PORT


def test_grpc_off_leaves_no_grpc_port_on_the_sidecar_pod_service_or_policy() -> None:
    config, rendered = sidecar_configs(grpc={"enabled": False})

    assert config.grpc.port == 0  # the sidecar opens no gRPC port, and loads no grpc
    assert pod_ports(rendered) == ["http"]
    assert [p["name"] for p in rendered["Service"]["spec"]["ports"]] == ["http"]
    assert rendered["NetworkPolicy"]["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": api.SIDECAR_PORT}]}
    ]
    # TF Serving keeps its own gRPC port inside the pod: it always serves one.
    tfserving = rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert f"--port={api.TFSERVING_GRPC_PORT}" in tfserving["args"]


def test_turning_grpc_off_or_changing_its_limit_rolls_the_pods() -> None:
    # The sidecar reads its gRPC settings once, at start.
    def checksum(rendered: dict[str, dict[str, Any]]) -> str:
        annotations = rendered["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        return str(annotations[CONFIG_CHECKSUM_ANNOTATION])

    default = checksum(children())
    assert checksum(children(grpc={"enabled": True, "maxMessageBytes": 64 * MiB})) == default
    assert checksum(children(grpc={"enabled": False})) != default
    assert checksum(children(grpc={"maxMessageBytes": 8 * MiB})) != default


def test_the_rest_body_limit_and_the_grpc_message_limit_are_separate() -> None:
    config, _ = sidecar_configs(maxRequestBytes=2 * MiB, grpc={"maxMessageBytes": 32 * MiB})

    assert (config.limits.max_request_bytes, config.grpc.max_message_bytes) == (2 * MiB, 32 * MiB)


def sidecar_memory_limit(rendered: dict[str, dict[str, Any]]) -> str:
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == api.SIDECAR_CONTAINER)
    return str(sidecar["resources"]["limits"]["memory"])


def test_the_default_memory_limit_holds_one_call_of_the_largest_message() -> None:
    # 256Mi for the sidecar itself, plus five times the largest message (a call is held
    # about five times over); with gRPC off, only the 256Mi.
    assert sidecar_memory_limit(children()) == "576Mi"
    assert sidecar_memory_limit(children(grpc={"maxMessageBytes": 16 * MiB})) == "336Mi"
    assert sidecar_memory_limit(children(grpc={"enabled": False})) == "256Mi"


def test_resources_set_by_hand_are_left_as_they_are() -> None:
    resources = {"requests": {"memory": "64Mi"}, "limits": {"memory": "300Mi"}}

    rendered = children(resources=resources, grpc={"maxMessageBytes": 128 * MiB})

    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == api.SIDECAR_CONTAINER)
    assert sidecar["resources"] == resources
