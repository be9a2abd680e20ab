"""A KWOK node whose pods get addresses this machine serves, so that a test can run a pod's
containers as processes bound at the address the cluster gave the pod.

KWOK plays the kubelet: it gives a pod an address from its node's spec.podCIDR (its stages'
`PodIPsWith`) and marks it Ready; nothing runs. The local environment routes its pod network
(localenv's POD_NETWORK, 198.18.0.0/15) to this machine itself, as 127/8 is: any process here
can bind an address of it, and a client reaches it as it would reach a pod's. (Not 127/8
itself: the API server refuses loopback addresses in EndpointSlices.) The kwok controller
manages every node (kwokctl runs it with --manage-all-nodes), this one too. The node is
tainted, so that only pods that ask for it (with `ProcessNode.placement`) land there, and the
other tests' pods keep the nodes without one.

The range is one /24 of the 512 in POD_NETWORK: from the cluster's name (each checkout has a
cluster of its own, and their tests' processes share the machine's addresses) and the
pytest-xdist worker (the workers of one run share the cluster). Two clusters whose names give
the same block share ranges: one in 64, which a run beside another checkout's would show as an
address already in use.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api

# The label that places a pod on the node, and the taint that keeps every other pod off it.
NODE_LABEL = f"{api.GROUP}/process-node"
TAINT_KEY = NODE_LABEL


@dataclass(frozen=True)
class ProcessNode:
    """The node: its name and the range its pods' addresses come from."""

    name: str
    pod_cidr: str

    def placement(self) -> dict[str, Any]:
        """What a pod template's spec needs to land on this node: its nodeSelector and the
        toleration of its taint (merge it into the spec)."""
        return {
            "nodeSelector": {NODE_LABEL: self.name},
            "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        }

    def holds(self, address: str) -> bool:
        """Whether a pod address is one of this node's."""
        return ipaddress.ip_address(address) in ipaddress.ip_network(self.pod_cidr)


WORKERS = 8  # /24 blocks for each cluster: pytest-xdist workers gw0 to gw7


def pod_cidr_for(cluster_name: str, worker: str) -> str:
    """A /24 of 198.18.0.0/15 for a cluster and a pytest-xdist worker (gw0, gw1, ...; any
    other name is worker 0)."""
    number = worker.removeprefix("gw")
    index = int(number) if number.isdigit() else 0
    if index >= WORKERS:
        raise ValueError(f"worker {worker}: at most {WORKERS} workers have a pod range each")
    cluster = int(hashlib.sha256(cluster_name.encode()).hexdigest(), 16) % (512 // WORKERS)
    block = cluster * WORKERS + index
    return f"198.{18 + block // 256}.{block % 256}.0/24"


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


def node_manifest(node: ProcessNode) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            # As kwokctl's own nodes say: a fake node, whose pods nothing runs.
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", NODE_LABEL: node.name},
        },
        "spec": {
            "podCIDR": node.pod_cidr,
            "podCIDRs": [node.pod_cidr],
            "taints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        },
    }


def make_process_node(kube_client: client.ApiClient, cluster_name: str) -> ProcessNode:
    """This worker's node, made if it is not there; one left by an earlier run is reused when
    its range is the one asked for (a node's podCIDR cannot change), else made again."""
    worker = worker_name()
    node = ProcessNode(f"processes-{worker}", pod_cidr_for(cluster_name, worker))
    core = client.CoreV1Api(kube_client)
    try:
        found = core.read_node(node.name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    else:
        if found.spec.pod_cidr == node.pod_cidr:
            return node
        core.delete_node(node.name)
    core.create_node(node_manifest(node))
    return node


def delete_process_node(kube_client: client.ApiClient, node: ProcessNode) -> None:
    try:
        client.CoreV1Api(kube_client).delete_node(node.name)
    except ApiException as exc:
        if exc.status != 404:
            raise
