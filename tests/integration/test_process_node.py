"""A pod placed on the test node gets an address of the node's range from KWOK (a range this
machine serves), becomes Ready, and a process here can listen at that address and be reached
there, as a pod's container would be."""

from __future__ import annotations

import socket

from kubernetes import client

from tests.support.waiting import wait_for


def test_a_pod_on_the_process_node_gets_an_address_a_process_here_can_serve_at(
    kube_client, namespace, process_node
):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "model"},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                **process_node.placement(),
            },
        },
    )

    def ready_address() -> str | None:
        pod = core.read_namespaced_pod("model", namespace)
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod.status.pod_ip if ready and pod.status.pod_ip else None

    address = wait_for(ready_address, timeout=30, what="the pod Ready with an address")
    pod = core.read_namespaced_pod("model", namespace)
    assert pod.spec.node_name == process_node.name
    assert process_node.holds(address), address

    with socket.create_server((address, 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((address, port), timeout=5) as caller:
            served, _ = server.accept()
            with served:
                caller.sendall(b"ping")
                assert served.recv(4) == b"ping"


def test_a_pod_without_the_toleration_is_refused_by_the_process_node(
    kube_client, namespace, process_node
):
    core = client.CoreV1Api(kube_client)
    selector_only = {"nodeSelector": process_node.placement()["nodeSelector"]}
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "other"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **selector_only},
        },
    )

    def unschedulable() -> str | None:
        pod = core.read_namespaced_pod("other", namespace)
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return condition.message
        return None

    said = wait_for(unschedulable, timeout=30, what="the scheduler to refuse the pod")
    assert "taint" in said, said
    assert core.read_namespaced_pod("other", namespace).spec.node_name is None
