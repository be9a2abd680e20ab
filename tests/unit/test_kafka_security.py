"""The log's Kafka security settings: one KafkaSecurity for every client, read from the sidecar's
file, a Kafka client properties file or flags; spec.logging.kafka.security as the operator reads
and renders it; and what a refusing broker turns into (the pod's summary, LoggingReady)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest

from modelserving.kafka_security.config_file import from_mapping, to_mapping
from modelserving.kafka_security.diagnosis import KafkaProblem, diagnose
from modelserving.kafka_security.flags import (
    PASSWORD_ENV,
    add_arguments,
    from_arguments,
    reader_connection,
)
from modelserving.kafka_security.properties import from_properties, parse_properties
from modelserving.kafka_security.settings import (
    KafkaSecurity,
    KafkaSecurityError,
    SaslMechanism,
    SecurityProtocol,
)
from modelserving_operator.kafka.security import admin_secrets, parse_security, what_to_check
from modelserving_operator.render.config_maps import render_configmaps, render_sidecar_config
from modelserving_operator.render.pods import render_deployment
from modelserving_operator.settings import OperatorSettings, SettingsError, settings_from
from modelserving_operator.settings import configure_parser as operator_parser
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import LoggingState, logging_from_pods
from modelserving_sidecar.config import ConfigError, parse_config
from modelserving_sidecar.log.status import summarize

SCRAM = KafkaSecurity(
    SecurityProtocol.SASL_SSL,
    ca_file="/ca/ca.crt",
    sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
    username="alice",
    password_file="/sasl/password",
)


def test_settings_that_cannot_work_are_refused_saying_what_to_change():
    cases = {
        "use SASL_SSL, or allow": KafkaSecurity(
            SecurityProtocol.SASL_PLAINTEXT,
            sasl_mechanism=SaslMechanism.PLAIN,
            username="u",
            password="p",
        ),
        "needs its certificate": KafkaSecurity(SecurityProtocol.SSL, key_file="k"),
        "needs a source of the SASL password": replace(SCRAM, password_file=""),
        "needs a SASL mechanism": replace(SCRAM, sasl_mechanism=None),
        "use SSL or SASL_SSL": KafkaSecurity(ca_file="/ca.crt"),
    }
    for words, security in cases.items():
        with pytest.raises(KafkaSecurityError, match=words):
            security.check()
    allowed = replace(cases["use SASL_SSL, or allow"], allow_sasl_plaintext=True)
    allowed.check()
    SCRAM.check()


def test_no_secret_value_shows_in_the_settings_repr():
    security = KafkaSecurity(
        SecurityProtocol.SASL_SSL,
        ca_pem="-----BEGIN CA-----",
        key_pem="-----BEGIN KEY-----",
        cert_pem="c",
        sasl_mechanism=SaslMechanism.PLAIN,
        username="u",
        password="hunter2",
    )
    assert "hunter2" not in repr(security)
    assert "BEGIN" not in repr(security)


def test_each_client_reads_the_password_file_as_it_is_then(tmp_path):
    password = tmp_path / "password"
    password.write_text("first\n")
    security = KafkaSecurity(
        SecurityProtocol.SASL_SSL,
        sasl_mechanism=SaslMechanism.PLAIN,
        username="u",
        password_file=str(password),
    )
    assert security.client_options()["sasl_plain_password"] == "first"
    password.write_text("second")
    assert security.client_options()["sasl_plain_password"] == "second"
    password.unlink()
    with pytest.raises(KafkaSecurityError, match="cannot read the SASL password file") as err:
        security.client_options()
    assert err.value.reason == "KafkaAuthenticationFailed"


def test_the_sidecar_file_form_round_trips_and_never_holds_a_secret_value():
    assert from_mapping("logging.kafkaSecurity", to_mapping(SCRAM)) == SCRAM
    assert to_mapping(KafkaSecurity()) == {}
    with pytest.raises(KafkaSecurityError, match="never written"):
        to_mapping(replace(SCRAM, password="p", password_file=""))
    logging = {
        "mode": "ALL",
        "topic": "t",
        "bootstrapServers": "k:9093",
        "kafkaSecurity": {"protocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512"},
    }
    config = {
        "serving": {"name": "s", "namespace": "n"},
        "model": {"name": "m", "version": 1, "modelId": 1},
        "logging": logging,
    }
    with pytest.raises(ConfigError, match=r"logging.kafkaSecurity: SASL_SSL needs a SASL user"):
        parse_config(config)
    config["logging"]["kafkaSecurity"] = to_mapping(SCRAM)
    assert parse_config(config).logging.kafka_security == SCRAM


def test_kafka_client_properties_are_read_as_kafkas_tools_read_them():
    text = """# a comment
! another
bootstrap.servers = broker:9093
security.protocol: SASL_SSL
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/ca.crt
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
    username="bob" password="s3\\"cret";
"""
    properties = parse_properties(text)
    assert properties["bootstrap.servers"] == "broker:9093"
    security = from_properties(properties, "f")
    assert security.protocol is SecurityProtocol.SASL_SSL
    assert (security.ca_file, security.sasl_mechanism) == ("/etc/kafka/ca.crt", "SCRAM-SHA-256")
    assert (security.username, security.password) == ("bob", 's3"cret')
    security.check()
    jks = {"security.protocol": "SSL", "ssl.truststore.location": "/t.jks"}
    with pytest.raises(KafkaSecurityError, match=r"give the truststore as PEM"):
        from_properties(jks, "f")


def test_a_readers_flags_win_over_its_properties_file(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text(
        "bootstrap.servers=b:9093\nsecurity.protocol=SSL\n"
        "ssl.truststore.type=PEM\nssl.truststore.location=/ca.crt\n"
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--command-config", str(props), "--ssl-ca-file", "/other.crt"])
    servers, security = reader_connection(args, environ={})
    assert (servers, security.protocol, security.ca_file) == ("b:9093", "SSL", "/other.crt")
    args = parser.parse_args(
        ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN", "--sasl-username", "u"]
    )
    security, _ = from_arguments(args, environ={PASSWORD_ENV: "pw"})
    assert security.read_password() == "pw"


# --------------------------------------------------------------------------- the operator


def serving(**security) -> ServingSpec:
    kafka = {"topic": "demo.t", "security": security} if security else {"topic": "demo.t"}
    return ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u"},
            "spec": {
                "model": {"version": 1, "basePath": "s3://m"},
                "auth": {"mode": "none"},
                "logging": {"kafka": kafka},
            },
        }
    )


SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9093")
STRIMZI = {
    "protocol": "SASL_SSL",
    "ca": {"secretName": "my-cluster-cluster-ca-cert"},
    "sasl": {"mechanism": "SCRAM-SHA-512", "passwordSecret": {"name": "my-user"}},
}


def test_a_strimzi_user_is_mounted_and_named_to_the_sidecar_without_renaming():
    spec = serving(**STRIMZI)
    logging = render_sidecar_config(spec, SETTINGS, 1)["logging"]
    assert logging["kafkaSecurity"] == {
        "protocol": "SASL_SSL",
        "caFile": "/etc/modelserving/kafka/ca/ca.crt",
        "saslMechanism": "SCRAM-SHA-512",
        "username": "my-user",
        "passwordFile": "/etc/modelserving/kafka/sasl/password",
    }
    pod = render_deployment(spec, SETTINGS, render_configmaps(spec, SETTINGS, 1))["spec"][
        "template"
    ]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-ca"]["secret"]["secretName"] == "my-cluster-cluster-ca-cert"
    assert volumes["kafka-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert volumes["kafka-sasl"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    sidecar = next(c for c in pod["containers"] if c["name"] == "sidecar")
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["kafka-sasl"] == {
        "name": "kafka-sasl",
        "readOnly": True,
        "mountPath": "/etc/modelserving/kafka/sasl",
    }
    kafka = [m for name, m in mounts.items() if name.startswith("kafka-")]
    assert len(kafka) == 2 and all("subPath" not in m for m in kafka), "updates reach the pod"
    assert "my-user" not in json.dumps(render_sidecar_config(serving(), SETTINGS, 1))


def test_the_operators_default_applies_where_the_spec_has_no_security_block():
    parser = argparse.ArgumentParser()
    operator_parser(parser)
    args = parser.parse_args(["--kafka-security", json.dumps(STRIMZI)])
    settings = replace(settings_from(args, {}), kafka_bootstrap_servers="kafka:9093")
    silent = render_sidecar_config(serving(), settings, 1)["logging"]
    assert silent["kafkaSecurity"]["saslMechanism"] == "SCRAM-SHA-512"
    speaks = render_sidecar_config(serving(protocol="PLAINTEXT"), settings, 1)["logging"]
    assert "kafkaSecurity" not in speaks
    bad = parser.parse_args(["--kafka-security", '{"protocol": "SASL_SSL"}'])
    with pytest.raises(SettingsError, match="protocol SASL_SSL needs sasl"):
        settings_from(bad, {})


def test_the_spec_reader_refuses_what_the_crd_refuses_with_its_words():
    with pytest.raises(ValueError, match="clientCertificate needs TLS"):
        parse_security({"protocol": "PLAINTEXT", "clientCertificate": {"secretName": "u"}})
    with pytest.raises(ValueError, match="ca names one source"):
        parse_security({"protocol": "SSL", "ca": {"secretName": "a", "configMapName": "b"}})


def test_a_refusing_broker_is_the_pods_state_and_logging_ready_says_what_to_check():
    problem = KafkaProblem("KafkaAuthenticationFailed", "the broker refused it")
    summary = summarize(
        spool_bytes=99,
        spool_max_bytes=100,
        waiting_records=7,
        oldest_age_seconds=12,
        kafka_reachable=True,
        refusing=True,
        problem=problem,
    )
    assert summary["state"] == "KafkaAuthenticationFailed", "the cause before the spool"
    pods = [{"name": "p-1", "logStatus": json.dumps(summary)}]
    state = logging_from_pods(LoggingState(True, "TopicReady", "ok"), pods)
    assert (state.ready, state.reason) == (False, "KafkaAuthenticationFailed")
    assert "the broker refused it" in state.message
    hint = what_to_check(state.reason, serving(**STRIMZI).kafka_security(SETTINGS))
    assert "Secret my-user (entry password" in hint
    tls = what_to_check("KafkaTLSFailed", serving(**STRIMZI).kafka_security(SETTINGS))
    assert "Secret my-cluster-cluster-ca-cert (entry ca.crt" in tls


async def test_a_certificate_not_naming_the_address_or_from_another_ca_is_a_tls_failure(tmp_path):
    """Against a real TLS server: what a broker's certificate can be wrong in, diagnosed."""
    import asyncio
    import ssl

    from tests.support.scripts import load_script

    certs = load_script("localenv/kafka_certs.py", "kafka_certs")
    ca = certs.make_ca()
    elsewhere = certs.issue(ca, "kafka", server=True, hosts=("kafka.example",))
    (tmp_path / "server.pem").write_bytes(elsewhere.key_pem + elsewhere.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    bootstrap = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    trusting = KafkaSecurity(SecurityProtocol.SSL, ca_pem=ca.cert_pem.decode())
    async with server:
        mismatch = await diagnose(bootstrap, trusting)
        other_ca = certs.make_ca("another CA").cert_pem.decode()
        untrusted = await diagnose(bootstrap, replace(trusting, ca_pem=other_ca))
    assert mismatch is not None and mismatch.reason == "KafkaTLSFailed"
    assert "certificate is not valid for '127.0.0.1'" in mismatch.message
    assert untrusted is not None and untrusted.reason == "KafkaTLSFailed"
    assert "unable to get local issuer certificate" in untrusted.message


def test_a_ca_from_a_configmap_and_a_client_certificate_are_mounted_by_their_entries():
    spec = serving(
        protocol="SSL",
        ca={"configMapName": "kafka-ca", "key": "bundle.pem"},
        clientCertificate={"secretName": "tls-user"},
    )
    pod = render_deployment(spec, SETTINGS, render_configmaps(spec, SETTINGS, 1))["spec"][
        "template"
    ]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-ca"]["configMap"] == {
        "name": "kafka-ca",
        "items": [{"key": "bundle.pem", "path": "ca.crt"}],
    }
    assert volumes["kafka-client"]["secret"]["items"] == [
        {"key": "user.crt", "path": "user.crt"},
        {"key": "user.key", "path": "user.key"},
    ]
    logging = render_sidecar_config(spec, SETTINGS, 1)["logging"]["kafkaSecurity"]
    assert (logging["certFile"], logging["keyFile"]) == (
        "/etc/modelserving/kafka/client/user.crt",
        "/etc/modelserving/kafka/client/user.key",
    )


def test_the_secrets_the_topic_admin_reads_are_the_ones_holding_credentials():
    assert admin_secrets(parse_security(STRIMZI)) == ("my-cluster-cluster-ca-cert", "my-user")
    ca_in_configmap = {"protocol": "SSL", "ca": {"configMapName": "kafka-ca"}}
    assert admin_secrets(parse_security(ca_in_configmap)) == ()
    assert admin_secrets(parse_security({"protocol": "PLAINTEXT"})) == ()


def test_an_operator_may_be_told_not_to_read_secrets():
    parser = argparse.ArgumentParser()
    operator_parser(parser)
    assert settings_from(parser.parse_args([]), {}).read_secrets is True
    assert settings_from(parser.parse_args(["--read-secrets", "false"]), {}).read_secrets is False
    chart = settings_from(parser.parse_args([]), {"MODELSERVING_READ_SECRETS": "false"})
    assert chart.read_secrets is False
    with pytest.raises(SettingsError, match="MODELSERVING_READ_SECRETS"):
        settings_from(parser.parse_args([]), {"MODELSERVING_READ_SECRETS": "maybe"})
