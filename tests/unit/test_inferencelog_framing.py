"""The records' framing with a schema registry, without Kafka: what the operator renders for the
sidecar (its settings, the Secret's and ConfigMap's files), what the sidecar makes of them, its
lookup of the id against the registry stand-in (modelserving_sidecar.log.framing), the spool
records framed with id 0 until the id is known and with it after, and the pods' word in
LoggingReady when their lookup fails."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace

import pytest
import yaml

from modelserving.inferencelog.record import (
    SCHEMA,
    InferenceLogRecord,
    confluent_prefix,
    decode_record,
)
from modelserving.inferencelog.schema_registry import (
    REGISTRY_AUTHENTICATION_FAILED,
    REGISTRY_CREDENTIALS_MISSING,
    REGISTRY_UNREACHABLE,
    SCHEMA_NOT_REGISTERED,
    SchemaRegistry,
    subject_of,
)
from modelserving_operator.kafka.schema_registry import register_schema
from modelserving_operator.render.config_maps import render_configmaps, render_sidecar_configmap
from modelserving_operator.render.pods import render_deployment
from modelserving_operator.settings import (
    OperatorSettings,
    SettingsError,
    configure_parser,
    settings_from,
)
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import LoggingState, logging_from_pods
from modelserving_sidecar.config import ConfigError, SchemaRegistryConfig, parse_config
from modelserving_sidecar.log.framing import PENDING, RegistryFraming, reframed
from modelserving_sidecar.log.records import SpoolRecordMaker
from modelserving_sidecar.log.status import summarize
from tests.support.exchanges import an_exchange
from tests.support.ports import free_port
from tests.support.schema_registry_standin import SchemaRegistryStandIn, running_registry
from tests.support.waiting import wait_for_async

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")
TOPIC = "demo.mnist.inference"
REGISTRY = {
    "url": "https://registry.example:8081",
    "ca": {"configMapName": "registry-ca"},
    "credentials": {"secretName": "registry-login", "usernameKey": "user"},
}


def mnist(registry: dict | None = REGISTRY) -> ServingSpec:
    kafka = {"schemaRegistry": registry} if registry else {}
    return ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"version": 1, "basePath": "s3://models/mnist"},
                "auth": {"mode": "none"},
                "logging": {"kafka": kafka},
            },
        }
    )


def sidecar_container(spec: ServingSpec) -> tuple[dict, list[dict]]:
    deployment = render_deployment(spec, SETTINGS, render_configmaps(spec, SETTINGS, 3))
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "sidecar"), pod["volumes"]


def test_the_sidecar_is_given_the_subject_and_the_registrys_files_as_mounted():
    raw = yaml.safe_load(
        render_sidecar_configmap(mnist(), SETTINGS, model_id=3)["data"]["sidecar.yaml"]
    )
    registry = parse_config(raw).logging.schema_registry
    assert registry == SchemaRegistryConfig(
        url="https://registry.example:8081",
        subject=f"{TOPIC}-value",
        ca_file="/etc/modelserving/schema-registry/ca/ca.crt",
        username_file="/etc/modelserving/schema-registry/credentials/username",
        password_file="/etc/modelserving/schema-registry/credentials/password",
    )
    container, volumes = sidecar_container(mnist())
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    by_name = {v["name"]: v for v in volumes}
    for path in registry.files():
        folder = path.rsplit("/", 1)[0]
        assert folder in mounts, f"{path} is in no mount"
    ca = by_name[mounts["/etc/modelserving/schema-registry/ca"]]
    assert ca["configMap"] == {
        "name": "registry-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    login = by_name[mounts["/etc/modelserving/schema-registry/credentials"]]["secret"]
    assert login["secretName"] == "registry-login"
    # The spec's entry names, under the file names the settings use.
    assert login["items"] == [
        {"key": "user", "path": "username"},
        {"key": "password", "path": "password"},
    ]


def test_without_a_registry_nothing_is_rendered_and_values_stay_plain_avro():
    raw = yaml.safe_load(
        render_sidecar_configmap(mnist(None), SETTINGS, model_id=3)["data"]["sidecar.yaml"]
    )
    assert "schemaRegistry" not in raw["logging"]
    container, _ = sidecar_container(mnist(None))
    assert not any("schema-registry" in m["mountPath"] for m in container["volumeMounts"])
    maker = SpoolRecordMaker(*_model_and_settings(raw))
    value = maker.make(an_exchange()).value
    assert value[0] != 0  # no framing: the modelId's varint comes first
    assert decode_record(value).model_id == 3


@pytest.mark.parametrize(
    ("registry", "words"),
    [
        ({"subject": "s"}, "url: required"),
        ({"url": "ftp://r", "subject": "s"}, "http:// or https://"),
        ({"url": "http://r", "subject": "s", "usernameFile": "/u"}, "go together"),
        ({"url": "http://r", "subject": "s", "token": "x"}, "unknown key(s) token"),
    ],
)
def test_a_registry_setting_that_cannot_work_is_named(registry, words):
    raw = yaml.safe_load(
        render_sidecar_configmap(mnist(None), SETTINGS, model_id=3)["data"]["sidecar.yaml"]
    )
    raw["logging"]["schemaRegistry"] = registry
    with pytest.raises(ConfigError, match=r"logging\.schemaRegistry") as refused:
        parse_config(raw)
    assert words in str(refused.value)
    raw["logging"]["schemaRegistry"] = {"url": "http://r", "subject": "s"}
    raw["logging"]["confluentSchemaId"] = 4
    with pytest.raises(ConfigError, match="not both"):
        parse_config(raw)


def _model_and_settings(raw: dict):
    config = parse_config(raw)
    return config.model, config.logging, "pod-1"


def test_records_are_framed_with_id_0_until_the_id_is_known_then_with_it():
    raw = yaml.safe_load(
        render_sidecar_configmap(mnist(), SETTINGS, model_id=3)["data"]["sidecar.yaml"]
    )
    maker = SpoolRecordMaker(*_model_and_settings(raw))
    pending = maker.make(an_exchange()).value
    maker.frame_with(9)
    framed = maker.make(an_exchange()).value
    assert pending.startswith(PENDING) and framed.startswith(confluent_prefix(9))
    # What waited is sent with the id; what was framed with it already goes as it is.
    assert reframed(pending, confluent_prefix(9)) == framed
    assert reframed(framed, confluent_prefix(10)) == framed
    assert decode_record(framed, confluent=True).model_id == 3
    assert isinstance(decode_record(framed, confluent=True), InferenceLogRecord)


async def test_the_sidecar_looks_the_id_up_once_the_schema_is_registered(tmp_path):
    (tmp_path / "user").write_text("logger\n")
    (tmp_path / "password").write_text("pa55\n")
    standin = SchemaRegistryStandIn(users={"logger": "pa55"})
    subject = subject_of(TOPIC)
    async with running_registry(standin) as (_, url):
        framing = RegistryFraming(
            SchemaRegistryConfig(
                url,
                subject,
                username_file=str(tmp_path / "user"),
                password_file=str(tmp_path / "password"),
            )
        )
        before = await framing.lookup()
        assert getattr(before, "reason", None) == SCHEMA_NOT_REGISTERED
        running = asyncio.create_task(framing.run())

        async def first_answer():
            return framing.problem

        await wait_for_async(first_answer, 5, "the first lookup's answer")
        assert framing.problem is not None and framing.problem.reason == SCHEMA_NOT_REGISTERED
        registered = await register_schema(
            SchemaRegistry(url, None, "logger", "pa55"), subject, SCHEMA
        )
        await asyncio.wait_for(framing.known.wait(), 10)
        await running
    assert framing.schema_id == getattr(registered, "schema_id", None) == 1
    assert (framing.prefix, framing.problem) == (confluent_prefix(1), None)
    # Only looked up: the sidecar registered nothing.
    assert {(r.method, r.path) for r in standin.seen if r.method == "POST"} == {
        ("POST", f"/subjects/{subject}"),
        ("POST", f"/subjects/{subject}/versions"),
    }
    assert sum(r.path.endswith("/versions") for r in standin.seen) == 1


async def test_why_the_id_is_not_known_is_the_registrys_word_and_the_files_are_read_each_time(
    tmp_path,
):
    standin = SchemaRegistryStandIn(users={"logger": "pa55"})
    password = tmp_path / "password"
    (tmp_path / "user").write_text("logger")
    async with running_registry(standin) as (_, url):
        settings = SchemaRegistryConfig(
            url, "s-value", username_file=str(tmp_path / "user"), password_file=str(password)
        )
        missing = await RegistryFraming(settings).lookup()
        password.write_text("wrong")
        refused = await RegistryFraming(settings).lookup()
    gone = await RegistryFraming(settings).lookup()
    assert getattr(missing, "reason", None) == REGISTRY_CREDENTIALS_MISSING
    assert str(password) in getattr(missing, "message", "")
    assert getattr(refused, "reason", None) == REGISTRY_AUTHENTICATION_FAILED
    assert "wrong" not in getattr(refused, "message", "wrong")
    assert getattr(gone, "reason", None) == REGISTRY_UNREACHABLE
    unused = f"http://127.0.0.1:{free_port()}"
    assert unused  # a port nobody listens on is unreachable too, and says its URL
    far = await RegistryFraming(SchemaRegistryConfig(unused, "s")).lookup()
    assert getattr(far, "reason", None) == REGISTRY_UNREACHABLE and unused in far.message


def test_a_pod_whose_lookup_fails_is_logging_readys_reason_with_the_registrys_words():
    problem = type("P", (), {"reason": REGISTRY_UNREACHABLE, "message": "at http://r: down"})()
    summary = summarize(
        spool_bytes=10,
        spool_max_bytes=100,
        waiting_records=7,
        oldest_age_seconds=12,
        kafka_reachable=True,
        refusing=False,
        registry_problem=problem,
    )
    assert (summary["state"], summary["registryError"]) == (
        REGISTRY_UNREACHABLE,
        "at http://r: down",
    )
    ready = LoggingState(True, "TopicReady", "records go to the topic t")
    state = logging_from_pods(ready, [{"name": "pod-1", "logStatus": json.dumps(summary)}])
    assert (state.ready, state.reason) == (False, REGISTRY_UNREACHABLE)
    assert "7 records wait" in state.message
    assert "the schema registry cannot be reached (at http://r: down)" in state.message


def test_the_operators_registry_is_the_default_and_a_spec_of_its_own_wins():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    chart = json.dumps({"url": "https://registry.kafka:8081", "credentials": {"secretName": "x"}})
    settings = replace(
        settings_from(parser.parse_args([]), {"MODELSERVING_SCHEMA_REGISTRY": chart}),
        kafka_bootstrap_servers="kafka:9092",
    )
    assert settings_from(parser.parse_args([]), {"MODELSERVING_SCHEMA_REGISTRY": "{}"}) == (
        settings_from(parser.parse_args([]), {})
    )
    for spec, url in ((mnist(None), "https://registry.kafka:8081"), (mnist(), REGISTRY["url"])):
        raw = yaml.safe_load(
            render_sidecar_configmap(spec, settings, model_id=3)["data"]["sidecar.yaml"]
        )
        assert raw["logging"]["schemaRegistry"]["url"] == url
    # A chart value the CRD would refuse is refused at start, with the CRD's words.
    with pytest.raises(SettingsError, match="MODELSERVING_SCHEMA_REGISTRY") as refused:
        settings_from(parser.parse_args([]), {"MODELSERVING_SCHEMA_REGISTRY": '{"url": "ftp://r"}'})
    assert "url must be http(s)://HOST[:PORT][/PATH]" in str(refused.value)
