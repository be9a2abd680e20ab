"""A Secret or ConfigMap that a serving's TF Serving environment reads (spec.server.env or
envFrom), changed in place, rolls the serving's pods; a change the pods would not see (another
key of that Secret or ConfigMap, the API-key Secret, which the sidecar reloads live) rolls
nothing. The operator runs as the chart's ServiceAccount, with the chart's rights on Secrets
and ConfigMaps (get, by name: it reads them again every --secret-check-seconds, here 2)."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from modelserving_operator.names import SECRETS_CHECKSUM_ANNOTATION
from tests.support.servings import is_ready, serving_manifest
from tests.support.waiting import wait_for


@pytest.fixture
def operator_flags() -> list[str]:
    return ["--secret-check-seconds", "2"]


def encoded(**values: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def from_secret(variable: str, secret: str, key: str) -> dict:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def test_a_secret_the_environment_reads_changed_in_place_rolls_the_pods(
    operator, crds, kube_client, namespace
):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)

    def secret(name: str, **values: str) -> None:
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded(**values)),
        )

    def change(name: str, **values: str) -> None:
        core.patch_namespaced_secret(name, namespace, {"data": encoded(**values)})

    def deployment() -> client.V1Deployment:
        return apps.read_namespaced_deployment("mnist", namespace)

    def log_count(text: str) -> int:
        return operator.log().count(text)

    # Given a serving whose TF Serving reads S3 credentials from a Secret, and its API keys
    secret("s3", id="AKIA1", key="first", region="eu-west-1")
    secret("mnist-keys", keys="one")
    env = [from_secret("AWS_ACCESS_KEY_ID", "s3", "id"), from_secret("AWS_SECRET", "s3", "key")]
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"enabled": False}, server={"env": env}),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    before = deployment()
    assert SECRETS_CHECKSUM_ANNOTATION in before.spec.template.metadata.annotations
    old_pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    # When a key the pods do not read and the API-key Secret change, and the operator has
    # seen the change of the Secret the pods read and has nothing left to do
    seen = f"Secret {namespace}/s3 changed"
    handled, idle = log_count(seen), log_count("caught up")
    change("s3", region="us-east-1")
    change("mnist-keys", keys="two")
    wait_for(lambda: log_count(seen) > handled, timeout=30, what="the operator to see the change")
    wait_for(lambda: log_count("caught up") > idle, timeout=30, what="the operator idle")

    # Then nothing rolled
    assert deployment().metadata.generation == before.metadata.generation

    # When a value the pods read changes in place
    change("s3", key="second")

    # Then the pod template changes once, new pods replace the old, and the serving is Ready
    wait_for(
        lambda: deployment().metadata.generation > before.metadata.generation,
        timeout=30,
        what="the Deployment's pod template to change",
    )
    after = deployment()
    assert after.metadata.generation == before.metadata.generation + 1
    checksums = [
        d.spec.template.metadata.annotations[SECRETS_CHECKSUM_ANNOTATION] for d in (before, after)
    ]
    assert checksums[0] != checksums[1]

    def rolled() -> bool:
        d = deployment()
        pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
        return (
            d.status.updated_replicas == d.status.ready_replicas == d.spec.replicas
            and (d.status.observed_generation or 0) >= after.metadata.generation
            and not pods & old_pods
        )

    wait_for(rolled, timeout=90, what="the new pods to replace the old", interval=0.5)
    assert is_ready(crds, namespace, "mnist")


def test_a_secret_read_whole_by_env_from_rolls_the_pods_and_a_bad_source_is_refused(
    operator, crds, kube_client, namespace
):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="tf-env"), data=encoded(A="1")),
    )

    # An envFrom source that names neither a Secret nor a ConfigMap is refused, saying so
    with pytest.raises(ApiException) as refused:
        crds.create_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            serving_manifest("bad", server={"envFrom": [{"prefix": "X_"}]}),
        )
    assert "exactly one of secretRef and configMapRef" in refused.value.body

    # Given a serving whose TF Serving takes every key of a Secret as its environment
    env_from = [{"secretRef": {"name": "tf-env"}, "prefix": "TF_"}]
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"enabled": False}, server={"envFrom": env_from}),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    before = apps.read_namespaced_deployment("mnist", namespace)
    assert before.spec.template.spec.containers[0].env_from[0].secret_ref.name == "tf-env"

    # When a key is added to that Secret
    core.patch_namespaced_secret("tf-env", namespace, {"data": encoded(B="2")})

    # Then the pods roll
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("mnist", namespace).metadata.generation
            == before.metadata.generation + 1
        ),
        timeout=30,
        what="the Deployment's pod template to change",
    )


def test_a_config_map_the_environment_reads_changed_in_place_rolls_the_pods(
    operator, crds, kube_client, namespace
):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)

    def config_map(name: str, **values: str) -> None:
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=values)
        )

    def change(name: str, **values: str) -> None:
        core.patch_namespaced_config_map(name, namespace, {"data": values})

    def deployment() -> client.V1Deployment:
        return apps.read_namespaced_deployment("mnist", namespace)

    def log_count(text: str) -> int:
        return operator.log().count(text)

    # Given a serving whose TF Serving takes one key of a ConfigMap and every key of another
    config_map("tuning", mode="fast", unread="1")
    config_map("tf-env", A="1")
    env = [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "tuning", "key": "mode"}}}]
    env_from = [{"configMapRef": {"name": "tf-env"}, "prefix": "TF_"}]
    server = {"env": env, "envFrom": env_from}
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("mnist", logging={"enabled": False}, server=server),
    )
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    before = deployment()
    assert SECRETS_CHECKSUM_ANNOTATION in before.spec.template.metadata.annotations
    old_pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}

    # When a key the pods do not read changes, and the operator has seen it and is idle
    seen = f"ConfigMap {namespace}/tuning changed"
    handled, idle = log_count(seen), log_count("caught up")
    change("tuning", unread="2")
    wait_for(lambda: log_count(seen) > handled, timeout=30, what="the operator to see the change")
    wait_for(lambda: log_count("caught up") > idle, timeout=30, what="the operator idle")

    # Then nothing rolled
    assert deployment().metadata.generation == before.metadata.generation

    # When a key is added to the ConfigMap that envFrom reads whole
    change("tf-env", B="2")

    # Then the pod template changes once, new pods replace the old, and the serving is Ready
    wait_for(
        lambda: deployment().metadata.generation > before.metadata.generation,
        timeout=30,
        what="the Deployment's pod template to change",
    )
    after = deployment()
    assert after.metadata.generation == before.metadata.generation + 1
    checksums = [
        d.spec.template.metadata.annotations[SECRETS_CHECKSUM_ANNOTATION] for d in (before, after)
    ]
    assert checksums[0] != checksums[1]

    def rolled() -> bool:
        d = deployment()
        pods = {p.metadata.name for p in core.list_namespaced_pod(namespace).items}
        return (
            d.status.updated_replicas == d.status.ready_replicas == d.spec.replicas
            and (d.status.observed_generation or 0) >= after.metadata.generation
            and not pods & old_pods
        )

    wait_for(rolled, timeout=90, what="the new pods to replace the old", interval=0.5)
    assert is_ready(crds, namespace, "mnist")
