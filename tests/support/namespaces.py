"""Namespaces the integration tests make for themselves, and delete after."""

from __future__ import annotations

import uuid

from tests.support.waiting import wait_for


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_namespaces(kube_client, count: int) -> list[str]:
    """`count` fresh namespaces, each with its default ServiceAccount."""
    from kubernetes import client

    core = client.CoreV1Api(kube_client)
    names = [unique_name("t") for _ in range(count)]
    for name in names:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # The namespace's default ServiceAccount is made by the controller-manager;
    # tests that create Pods need it.
    for name in names:
        wait_for(
            lambda name=name: _has_default_sa(core, name),
            timeout=30,
            what=f"ServiceAccount default in {name}",
        )
    return names


def delete_namespaces(kube_client, names: list[str]) -> None:
    from kubernetes import client

    for name in names:
        client.CoreV1Api(kube_client).delete_namespace(name)


def _has_default_sa(core, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
