"""The inference log framed for data tools, end to end: the real operator registering the
`inferencelog` schema in a schema registry under `<topic>-value`, the real sidecar process
(from what the operator rendered, the registry's Secret projected as the kubelet does) framing
each record in Confluent's wire format with the id it looks up, the real broker, and
confluent-kafka's consumer with its AvroDeserializer and SchemaRegistryClient (what data teams
run) reading the topic. The registry is the stand-in of tests/support (no registry server can
be had here; confluent-kafka's client is tested against it in tests/unit).

A registry away at the start: LoggingReady names it, predictions keep answering, records wait
in the spool and all arrive framed once it is back; away again once the id is known, nothing
waits. Credentials it refuses: a reason naming the
Secret and its entries, and no password in the status, an Event or the operator's log."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import avro.io
import avro.schema
import pytest
import yaml
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from modelserving.inferencelog.record import SCHEMA
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.log.status import ANNOTATION
from tests.support.pod_volumes import SidecarPod
from tests.support.ports import free_port
from tests.support.schema_registry_standin import SchemaRegistryStandIn, running_registry
from tests.support.servings import condition, get_serving, serving_manifest
from tests.support.sidecar_process import running_sidecar
from tests.support.tfserving_standin import StandInModel, TFServingStandIn, running_standin
from tests.support.waiting import wait_for, wait_for_async

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

T = TypeVar("T")
SERVING = "mnist"
KEY = "registry-test-key"
USER, PASSWORD = "inference-logger", "registry-pa55-word"
CREDENTIALS = "registry-credentials"  # a kubernetes.io/basic-auth Secret: username, password


async def until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Wait for `check` (calls of the API server, Kafka) in a thread: the registry stand-in
    serves on this event loop meanwhile."""
    return await wait_for_async(lambda: asyncio.to_thread(check), timeout, what, interval=0.3)


def secrets(core: client.CoreV1Api, namespace: str, password: str) -> None:
    """The serving's API keys, and the registry's credentials as a basic-auth Secret."""
    for name, kind, data in (
        ("mnist-keys", "Opaque", {"team-a": hash_api_key(KEY)}),
        (CREDENTIALS, "kubernetes.io/basic-auth", {"username": USER, "password": password}),
    ):
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type=kind,
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(name, namespace, body)


def make_serving(crds, namespace: str, topic: str, registry_url: str) -> None:
    logging = {
        "kafka": {
            "topic": topic,
            "schemaRegistry": {"url": registry_url, "credentials": {"secretName": CREDENTIALS}},
        }
    }
    manifest = serving_manifest(SERVING, logging=logging)
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)


def logging_ready(crds, namespace: str) -> dict:
    return condition(get_serving(crds, namespace, SERVING), "LoggingReady")


def logging_because(crds, namespace: str, reason: str) -> dict | None:
    ready = logging_ready(crds, namespace)
    return ready if ready.get("reason") == reason else None


def rendered_sidecar(core, apps, namespace: str, root: Path) -> tuple[dict[str, Any], str]:
    """The sidecar's config as the operator rendered it (the Secrets' files projected under
    `root`), and its pod's name."""
    selector = f"{api.LABEL_INSTANCE}={SERVING}"
    (pod,) = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items,
        60,
        "the serving's pod",
    )
    deployment = apps.read_namespaced_deployment(SERVING, namespace)
    return yaml.safe_load(SidecarPod(core, namespace, deployment, root).config_text()), (
        pod.metadata.name
    )


def consumed(bootstrap: str, topic: str, count: int, registry_url: str) -> list[tuple]:
    """What a data team's consumer reads: (key, raw value, value as AvroDeserializer decodes
    it through the registry) of the topic's first `count` records."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"data-team-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    registry = SchemaRegistryClient(
        {"url": registry_url, "basic.auth.user.info": f"{USER}:{PASSWORD}"}
    )
    deserializer = AvroDeserializer(registry)
    context = SerializationContext(topic, MessageField.VALUE)
    records: list[tuple] = []
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 60
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            value = message.value()
            records.append((message.key().decode(), value, deserializer(value, context)))
    finally:
        consumer.close()
    return records


async def predict(http: aiohttp.ClientSession, url: str, value: float) -> tuple[int, str]:
    async with http.post(
        f"{url}/v1/models/{SERVING}:predict",
        json={"instances": [value]},
        headers={"Authorization": f"ApiKey {KEY}"},
    ) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Request-Id", "")


async def test_records_wait_for_a_registry_that_is_away_then_arrive_framed_for_its_consumers(
    operator, crds, kube_client, local_env, namespace, topic, tmp_path
):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    topic = f"{namespace}.{topic}"  # a serving's topic starts with its namespace
    port = free_port()
    registry_url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(secrets, core, namespace, PASSWORD)
    await asyncio.to_thread(make_serving, crds, namespace, topic, registry_url)

    # The registry is away: LoggingReady says so, with its URL
    away = await until(
        lambda: logging_because(crds, namespace, "SchemaRegistryUnreachable"),
        60,
        "LoggingReady SchemaRegistryUnreachable",
    )
    assert away["status"] == "False" and registry_url in away["message"], away

    # The sidecar runs as the pod would, and looks the id up in the registry
    config, pod_name = await asyncio.to_thread(
        rendered_sidecar, core, apps, namespace, tmp_path / "pod"
    )
    framing = config["logging"]["schemaRegistry"]
    assert (framing["url"], framing["subject"]) == (registry_url, f"{topic}-value")
    mounted = await asyncio.to_thread(Path(framing["passwordFile"]).read_text)
    assert mounted == PASSWORD  # the Secret, as the kubelet projects it
    config["auth"]["kubeconfig"] = local_env.kubeconfig
    tf_serving = TFServingStandIn({SERVING: StandInModel()})
    async with (
        running_standin(tf_serving) as (_, upstream),
        aiohttp.ClientSession() as http,
    ):
        config["upstream"]["url"] = upstream
        async with running_sidecar(
            tmp_path / "sidecar", config, None, POD_NAME=pod_name, POD_NAMESPACE=namespace
        ) as sidecar:

            async def counted(name: str) -> float:
                return await sidecar.metric(http, f"modelserving_inference_log_{name}_total")

            # Predictions keep answering; their records wait in the spool
            answered = [await predict(http, sidecar.url, float(i)) for i in range(5)]
            assert [status for status, _ in answered] == [200] * 5
            await wait_for_async(
                lambda: _equals(counted("records_spooled"), 5), 10, "five records spooled"
            )
            assert await counted("records_produced") == 0

            def pod_state() -> dict | None:
                pod = core.read_namespaced_pod(pod_name, namespace)
                summary = json.loads((pod.metadata.annotations or {}).get(ANNOTATION) or "{}")
                return summary if summary.get("state") == "SchemaRegistryUnreachable" else None

            summary = await until(pod_state, 60, "the sidecar's log status to name the registry")
            assert registry_url in summary["registryError"], summary

            # The registry is back: the operator registers, the sidecar frames and sends
            standin = SchemaRegistryStandIn(users={USER: PASSWORD})
            async with running_registry(standin, port=port):
                ready = await until(
                    lambda: logging_because(crds, namespace, "TopicReady"),
                    60,
                    "LoggingReady TopicReady",
                )
                assert ready["status"] == "True"
                assert f"framed with schema id 1 of {topic}-value" in ready["message"], ready
                await wait_for_async(
                    lambda: _equals(counted("records_produced"), 5),
                    60,
                    "the waiting records sent",
                )
                answered += [await predict(http, sidecar.url, float(i)) for i in range(5, 10)]
                await wait_for_async(
                    lambda: _equals(counted("records_produced"), 10), 30, "all records sent"
                )
            # The registry away again, under load: the id is known, nothing waits for it
            answered += [await predict(http, sidecar.url, float(i)) for i in range(10, 15)]
            await wait_for_async(
                lambda: _equals(counted("records_produced"), 15), 30, "records sent meanwhile"
            )
            async with running_registry(standin, port=port):  # for the consumer's lookups
                records = await asyncio.to_thread(
                    consumed, local_env.kafka_bootstrap, topic, 15, registry_url
                )

    # Every record once, framed with the registered id, decoded by the data team's client
    assert sorted(key for key, _, _ in records) == sorted(rid for _, rid in answered)
    assert {value[:5] for _, value, _ in records} == {b"\x00\x00\x00\x00\x01"}
    seed_reader = avro.io.DatumReader(avro.schema.parse(json.dumps(SCHEMA)))
    for _, value, decoded in records:
        assert list(decoded) == [f["name"] for f in SCHEMA["fields"]]
        assert (decoded["modelName"], decoded["responseHttpCode"]) == (SERVING, 200)
        # Apache Avro reads the body after the 5-byte header with the seed's schema
        assert seed_reader.read(avro.io.BinaryDecoder(io.BytesIO(value[5:]))) == decoded
    assert json.loads(standin.schemas[0]) == SCHEMA
    assert standin.compatibility == {f"{topic}-value": "BACKWARD"}
    # The sidecar only looked the schema up: the operator alone registered it
    by_user = {(r.method, r.path.rsplit("/", 1)[-1]) for r in standin.seen if r.user == USER}
    assert ("POST", f"{topic}-value") in by_user and ("POST", "versions") in by_user


async def _equals(value: Any, expected: float) -> bool:
    return await value == expected


async def test_refused_credentials_name_the_secret_and_no_password_is_shown(
    operator, crds, kube_client, namespace, topic
):
    core = client.CoreV1Api(kube_client)
    topic = f"{namespace}.{topic}"
    wrong = "not-the-" + PASSWORD
    await asyncio.to_thread(secrets, core, namespace, wrong)
    async with running_registry(SchemaRegistryStandIn(users={USER: PASSWORD})) as (_, url):
        await asyncio.to_thread(make_serving, crds, namespace, topic, url)
        refused = await until(
            lambda: logging_because(crds, namespace, "SchemaRegistryAuthenticationFailed"),
            60,
            "LoggingReady SchemaRegistryAuthenticationFailed",
        )
        assert refused["status"] == "False"
        assert f"Secret {CREDENTIALS}" in refused["message"], refused
        assert "username" in refused["message"] and "password" in refused["message"]

        events = await asyncio.to_thread(core.list_namespaced_event, namespace)
        told = [e for e in events.items if e.reason == "SchemaRegistryAuthenticationFailed"]
        assert told, "a Warning Event says so"
        outputs = {
            "status": json.dumps(get_serving(crds, namespace, SERVING).get("status")),
            "events": json.dumps([e.to_dict() for e in events.items], default=str),
            "operator log": operator.log(),
        }
        for where, text in outputs.items():
            assert wrong not in text and PASSWORD not in text, f"a password is in the {where}"

        # Fixed in place: the operator reads the Secret again at its next look
        await asyncio.to_thread(secrets, core, namespace, PASSWORD)
        fixed = await until(
            lambda: logging_because(crds, namespace, "TopicReady"), 60, "LoggingReady TopicReady"
        )
        assert "framed with schema id 1" in fixed["message"]


@pytest.mark.parametrize(
    ("registry", "words"),
    [
        ({"url": "ftp://registry:8081"}, "http"),
        ({"url": "https://user:secret@registry:8081"}, "user"),
        ({"url": "https://registry:8081", "credentials": {}}, "secretName"),
    ],
    ids=["not-http", "password-in-url", "credentials-without-secret"],
)
def test_the_api_server_refuses_a_registry_that_cannot_work_saying_what_to_fix(
    registry, words, crds, namespace
):
    logging = {"kafka": {"schemaRegistry": registry}}
    manifest = serving_manifest(SERVING, logging=logging)
    with pytest.raises(ApiException) as refused:
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
        )
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "schemaRegistry" in message and words in message, message
