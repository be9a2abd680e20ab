"""The README's schema registry section against the real broker: records the sidecar's own
pipeline framed with the id a registry gave the `inferencelog` schema (zstd-compressed, the
default) are read by the README's `confluent-kafka` consumer snippet, taken from README.md as it
stands and run as a data team runs it, and by `modelserving logs --schema-registry`; a registry
that refuses the credentials ends the read with a message naming its URL and no password.

The registry is the stand-in (tests/support/schema_registry_standin.py), over TLS with basic
auth, served in the test's event loop while the snippet and the command run beside it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from modelserving.inferencelog.record import SCHEMA
from modelserving.inferencelog.schema_registry import (
    RegistryProblem,
    SchemaRegistry,
    ask,
    compatibility_request,
    register_request,
    registered_id,
    subject_of,
)
from modelserving_sidecar.config import (
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    SchemaRegistryConfig,
    ServingIdentity,
    SidecarConfig,
)
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import InferenceLogPipeline, open_inference_log
from tests.support import REPO
from tests.support.exchanges import varied_exchange
from tests.support.schema_registry_standin import SchemaRegistryStandIn, running_registry
from tests.support.scripts import load_script
from tests.support.waiting import wait_for_async

COUNT = 60
PARTITIONS = 3
MODEL = ModelIdentity(name="mnist", version=2, model_id=17)
USER, PASSWORD = "reader", "registry-pw-7f3a"
SECTION = "### With a schema registry"
# What the README's snippet names, and what the test gives in their place.
SNIPPET_BROKERS = "kafka:9092"
SNIPPET_REGISTRY = "https://schema-registry.kafka:8081"
SNIPPET_CA = "registry-ca.crt"
SNIPPET_TOPIC = "demo.mnist-inference"


@dataclass(frozen=True)
class Registry:
    """Where the stand-in listens, and the CA of its certificate."""

    url: str
    ca_file: Path


@dataclass(frozen=True)
class Produced:
    topic: str
    bootstrap: str
    registry: Registry
    exchanges: dict[str, Exchange]  # by request id

    def expected(self, request_id: str) -> dict[str, Any]:
        """The seven fields of the record of this request."""
        ex = self.exchanges[request_id]
        return {
            "modelId": MODEL.model_id,
            "modelName": MODEL.name,
            "modelVersion": ex.model_version if ex.model_version is not None else MODEL.version,
            "requestTimestamp": ex.received_ms,
            "responseHttpCode": ex.status,
            "inferenceRequest": ex.request_body.decode(),
            "inferenceResponse": ex.response_body.decode(),
        }


def readme_consumer_snippet() -> str:
    """The Python consumer of README.md's schema registry section, as it stands."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    (snippet,) = [block for block in blocks if "from confluent_kafka import Consumer" in block]
    return snippet


def with_values(snippet: str, values: dict[str, str]) -> str:
    """The snippet with each named value replaced by the test's (each named exactly once)."""
    for old, new in values.items():
        assert snippet.count(f'"{old}"') == 1, f"the README's snippet no longer names {old!r}"
        snippet = snippet.replace(f'"{old}"', json.dumps(new))
    return snippet


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registry(tmp_path_factory) -> AsyncIterator[Registry]:
    """The stand-in over TLS with basic auth, the schema registered as the operator does it:
    the subject's compatibility set to BACKWARD, then the schema under `<topic>-value`."""
    certs = load_script("localenv/kafka_certs.py", "kafka_certs")
    ca = certs.make_ca()
    server = certs.issue(ca, "registry", server=True, hosts=("127.0.0.1",))
    directory = tmp_path_factory.mktemp("registry")
    (directory / "server.pem").write_bytes(server.key_pem + server.cert_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem")
    standin = SchemaRegistryStandIn(users={USER: PASSWORD})
    async with running_registry(standin, tls=context) as (_, url):
        yield Registry(url, directory / "ca.crt")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def produced(local_env, registry: Registry, tmp_path_factory) -> AsyncIterator[Produced]:
    """COUNT records through the sidecar's pipeline, which looks the registered id up with the
    registry's CA and credentials as the operator mounts them, and frames each with it."""
    bootstrap = local_env.kafka_bootstrap
    topic = f"registry-{uuid.uuid4().hex[:8]}"
    client = SchemaRegistry(registry.url, registry.ca_file.read_text(), USER, PASSWORD)
    subject = subject_of(topic)
    answered = await ask(
        client,
        [
            (compatibility_request(subject), f"setting the compatibility of {subject}"),
            (register_request(subject, SCHEMA), f"registering the schema under {subject}"),
        ],
    )
    assert not isinstance(answered, RegistryProblem), answered
    assert registered_id(*answered) is not None

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    mounted = tmp_path_factory.mktemp("mounted")
    (mounted / "username").write_text(USER)
    (mounted / "password").write_text(PASSWORD)
    exchanges = [varied_exchange(i, request_id=f"req-{i:04d}") for i in range(COUNT)]
    config = SidecarConfig(
        serving=ServingIdentity(name="mnist", namespace="demo"),
        model=MODEL,
        logging=LoggingConfig(
            mode=LoggingMode.ALL,
            topic=topic,
            bootstrap_servers=bootstrap,
            spool_dir=str(tmp_path_factory.mktemp("spool")),
            schema_registry=SchemaRegistryConfig(
                registry.url,
                subject,
                ca_file=str(registry.ca_file),
                username_file=str(mounted / "username"),
                password_file=str(mounted / "password"),
            ),
        ),
    )
    metrics = prometheus_client.CollectorRegistry()
    async with open_inference_log(config, metrics) as sink:
        assert isinstance(sink, InferenceLogPipeline)
        for ex in exchanges:
            sink.submit(ex)

        async def all_acked() -> bool:
            produced = "modelserving_inference_log_records_produced_total"
            return (metrics.get_sample_value(produced) or 0) >= COUNT

        await wait_for_async(all_acked, 60, "Kafka's acks for every record", 0.1)
    yield Produced(topic, bootstrap, registry, {ex.request_id: ex for ex in exchanges})


async def test_the_readmes_confluent_kafka_consumer_reads_every_framed_record(
    produced: Produced, tmp_path: Path
):
    # Given the README's consumer, with our broker, registry, CA and topic in it
    snippet = with_values(
        readme_consumer_snippet(),
        {
            SNIPPET_BROKERS: produced.bootstrap,
            SNIPPET_REGISTRY: produced.registry.url,
            SNIPPET_CA: str(produced.registry.ca_file),
            SNIPPET_TOPIC: produced.topic,
        },
    )
    (tmp_path / "consumer.py").write_text(snippet)

    # When a data team runs it (it reads until stopped)
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "consumer.py"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "SCHEMA_REGISTRY_USER_INFO": f"{USER}:{PASSWORD}",
            "PYTHONUNBUFFERED": "1",
        },
    )
    printed: dict[str, dict[str, Any]] = {}
    assert consumer.stdout is not None
    try:

        async def every_record_printed() -> bool:
            try:
                line = await asyncio.wait_for(consumer.stdout.readline(), 0.5)
            except TimeoutError:
                return False
            if not line:  # it ended: what it said on stderr tells why
                return True
            key, _, record = line.decode().rstrip("\n").partition(" ")
            printed[key] = json.loads(record)
            return len(printed) >= COUNT

        await wait_for_async(every_record_printed, 90, "the README's consumer to print all", 0)
    finally:
        if consumer.returncode is None:
            consumer.terminate()
        _, stderr = await consumer.communicate()

    # Then it printed every record, each with the seed's seven fields as the sidecar wrote them
    assert len(printed) == COUNT, f"printed {len(printed)} of {COUNT}: {stderr.decode()[-2000:]}"
    for key, record in printed.items():
        assert record == produced.expected(key)


async def modelserving_logs(produced: Produced, password: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelserving.cli",
        "logs",
        produced.topic,
        "--bootstrap-servers",
        produced.bootstrap,
        "--from-beginning",
        "--schema-registry",
        produced.registry.url,
        "--schema-registry-ca",
        str(produced.registry.ca_file),
        "--schema-registry-user",
        USER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "MODELSERVING_SCHEMA_REGISTRY_PASSWORD": password},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_modelserving_logs_reads_framed_records_through_the_registry(produced: Produced):
    code, stdout, stderr = await modelserving_logs(produced, PASSWORD)

    assert code == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(produced.exchanges)
    for line in lines:
        assert {name: line[name] for name in produced.expected(line["key"])} == produced.expected(
            line["key"]
        )


async def test_a_registry_that_refuses_the_credentials_is_named_without_the_password(
    produced: Produced,
):
    code, stdout, stderr = await modelserving_logs(produced, "not-the-password")

    assert code == 1
    assert stdout == ""
    assert f"the schema registry at {produced.registry.url} refused the credentials" in stderr
    assert f"user {USER!r}" in stderr
    assert "not-the-password" not in stderr and PASSWORD not in stderr
    assert "Traceback" not in stderr
