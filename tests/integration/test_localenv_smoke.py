"""Smoke tests that prove each part of the local environment is real: the
control plane schedules Pods that KWOK makes Ready, RBAC and service-account
tokens work, the Kafka broker round-trips a message, and helm runs."""

from __future__ import annotations

import subprocess
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.support.waiting import wait_for


def test_deployment_gets_ready_pods(kube_client, namespace):
    apps = client.AppsV1Api(kube_client)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="smoke"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="main", image="example/none:1")]
                    ),
                ),
            ),
        ),
    )

    def ready_replicas():
        return apps.read_namespaced_deployment_status("smoke", namespace).status.ready_replicas

    assert wait_for(lambda: ready_replicas() == 3, timeout=60, what="3 ready replicas")
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(namespace, label_selector="app=smoke")
    assert [p.status.phase for p in pods.items] == ["Running"] * 3
    assert all(p.spec.node_name for p in pods.items), "every Pod was scheduled to a node"


def _access_review(kube_client, user: str, namespace: str) -> bool:
    review = client.AuthorizationV1Api(kube_client).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb="list", resource="configmaps"
                ),
            )
        )
    )
    return review.status.allowed


def test_service_account_token_is_refused_until_a_role_binding_allows_it(
    kube_client, local_env, namespace
):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )

    def token_for(audiences: list[str] | None) -> str:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=audiences, expiration_seconds=600)
        )
        return core.create_namespaced_service_account_token(
            "reader", namespace, request
        ).status.token

    token = token_for(["smoke-test"])

    # The API server authenticates the token for its audience ...
    review = client.AuthenticationV1Api(kube_client).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["smoke-test"]))
    )
    user = f"system:serviceaccount:{namespace}:reader"
    assert review.status.authenticated and review.status.user.username == user

    # ... and RBAC refuses it until a RoleBinding grants the verb.
    assert _access_review(kube_client, user, namespace) is False
    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    assert wait_for(
        lambda: _access_review(kube_client, user, namespace), timeout=10, what="the binding"
    )

    # A token for the API server's own audience, used as a client credential,
    # now lists ConfigMaps, and still nothing else.
    config = client.Configuration()
    config.host = kube_client.configuration.host
    config.ssl_ca_cert = kube_client.configuration.ssl_ca_cert
    config.verify_ssl = kube_client.configuration.verify_ssl
    config.api_key = {"authorization": f"Bearer {token_for(None)}"}
    with client.ApiClient(config) as as_reader:
        reader_core = client.CoreV1Api(as_reader)
        reader_core.list_namespaced_config_map(namespace)
        try:
            reader_core.list_namespaced_secret(namespace)
            raise AssertionError("the reader listed Secrets it was never granted")
        except ApiException as exc:
            assert exc.status == 403


async def test_kafka_round_trips_a_message(local_env, topic):
    payload = uuid.uuid4().bytes
    producer = AIOKafkaProducer(
        bootstrap_servers=local_env.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=b"smoke")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=local_env.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"smoke", payload)


def test_helm_runs(local_env):
    out = subprocess.run(
        ["helm", "version", "--short"], env=local_env.tool_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("v3.22.0")


def test_kubectl_talks_to_the_cluster(local_env):
    out = local_env.kubectl("get", "nodes", "-o", "name")
    assert len(out.stdout.split()) >= 2
