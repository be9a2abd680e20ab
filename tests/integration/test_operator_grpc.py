"""spec.sidecar.grpc through the real API server and operator: a message limit out of bounds is
refused with what to fix, and a serving with gRPC off has no gRPC port on its Service, its
Deployment's sidecar or its NetworkPolicy, turned on and off again by an edit."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support.servings import config_file, get_serving, is_ready, serving_manifest
from tests.support.waiting import wait_for

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

MiB = 1024 * 1024


def grpc_serving(name: str, **grpc: Any) -> dict[str, Any]:
    return serving_manifest(name, auth={"mode": "none"}, sidecar={"grpc": grpc})


def test_a_message_limit_out_of_bounds_is_refused_saying_what_to_fix(crds, namespace):
    refusals = {
        3 * MiB: "spec.sidecar.grpc.maxMessageBytes must be at least 4194304 (4 MiB",
        2 * 1024 * MiB: "spec.sidecar.grpc.maxMessageBytes must be at most 1073741824 (1 GiB)",
    }
    for limit, message in refusals.items():
        with pytest.raises(ApiException) as refused:
            crds.create_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                grpc_serving("bad", maxMessageBytes=limit),
            )
        assert refused.value.status == 422, limit
        assert message in " ".join(refused.value.body.split()), refused.value.body

    # The bounds themselves are taken, and the API server fills in what the spec left out.
    for name, limit in (("low", 4 * MiB), ("high", 1024 * MiB)):
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, grpc_serving(name, maxMessageBytes=limit)
        )
        stored = get_serving(crds, namespace, name)["spec"]["sidecar"]
        assert stored["grpc"] == {"enabled": True, "maxMessageBytes": limit}
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest("silent")
    )
    silent = get_serving(crds, namespace, "silent")["spec"]["sidecar"]["grpc"]
    assert silent == {"enabled": True, "maxMessageBytes": api.GRPC_MAX_MESSAGE_BYTES}


def grpc_ports(kube_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Where the serving's gRPC port shows: the Service, the sidecar container, the
    NetworkPolicy, and the sidecar's config file."""
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    networking = client.NetworkingV1Api(kube_client)
    pod = apps.read_namespaced_deployment(name, namespace).spec.template.spec
    sidecar = next(c for c in pod.containers if c.name == api.SIDECAR_CONTAINER)
    policy = networking.read_namespaced_network_policy(name, namespace)
    config = yaml.safe_load(config_file(core, apps, namespace, name, "sidecar.yaml"))
    return {
        "service": [
            (p.name, p.port) for p in core.read_namespaced_service(name, namespace).spec.ports
        ],
        "sidecar": [(p.name, p.container_port) for p in sidecar.ports],
        "policy": [p.port for rule in policy.spec.ingress for p in rule.ports],
        "config": config["grpc"],
    }


def test_grpc_off_leaves_no_grpc_port_and_an_edit_turns_it_on_and_off(
    operator, crds, kube_client, namespace
):
    # Given a serving with gRPC off
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, grpc_serving("mnist", enabled=False)
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")

    # Then neither its Service nor its pods nor its NetworkPolicy have a gRPC port, and its
    # sidecar opens none
    off = {
        "service": [("http", api.SIDECAR_PORT)],
        "sidecar": [("http", api.SIDECAR_PORT)],
        "policy": [api.SIDECAR_PORT],
    }
    ports = grpc_ports(kube_client, namespace, "mnist")
    assert {k: v for k, v in ports.items() if k != "config"} == off
    assert ports["config"]["port"] == 0

    # When the user turns it on with a limit of their own (kubectl edit)
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "mnist",
        {"spec": {"sidecar": {"grpc": {"enabled": True, "maxMessageBytes": 16 * MiB}}}},
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=60, what="Ready at gen 2")

    # Then the gRPC port is on the Service, the sidecar and the NetworkPolicy, with that limit
    assert grpc_ports(kube_client, namespace, "mnist") == {
        "service": [("http", api.SIDECAR_PORT), ("grpc", api.SIDECAR_GRPC_PORT)],
        "sidecar": [("http", api.SIDECAR_PORT), ("grpc", api.SIDECAR_GRPC_PORT)],
        "policy": [api.SIDECAR_PORT, api.SIDECAR_GRPC_PORT],
        "config": {
            "port": api.SIDECAR_GRPC_PORT,
            "upstream": f"127.0.0.1:{api.TFSERVING_GRPC_PORT}",
            "maxMessageBytes": 16 * MiB,
        },
    }

    # And turned off again, the port goes from all of them (not left behind by the apply)
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "mnist",
        {"spec": {"sidecar": {"grpc": {"enabled": False}}}},
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist", 3), timeout=60, what="Ready at gen 3")
    ports = grpc_ports(kube_client, namespace, "mnist")
    assert {k: v for k, v in ports.items() if k != "config"} == off
    assert ports["config"]["port"] == 0
