"""What a serving logs, rendered into its sidecar config: the operator's settings apply where
spec.logging is silent, the spec wins field by field where it speaks."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
import yaml

from modelserving_operator import reconcile
from modelserving_operator.kafka.topics import TopicOutcome
from modelserving_operator.render.config_maps import render_sidecar_configmap
from modelserving_operator.render.manifests import render_children
from modelserving_operator.settings import (
    OperatorSettings,
    SettingsError,
    configure_parser,
    settings_from,
)
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import (
    OPERATOR_KAFKA_UNREACHABLE,
    LoggingState,
    logging_from_pods,
)
from modelserving_sidecar.config import LogCompression, LogDurability, LoggingMode, parse_config
from modelserving_sidecar.log.policy import (
    NonJsonPolicy,
    OversizePolicy,
    Part,
    RedactAction,
    RedactRule,
    RedactTarget,
)
from modelserving_sidecar.log.status import summarize

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092")


def mnist(**logging) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"version": 1, "basePath": "s3://models/mnist"},
                "auth": {"mode": "none"},
                "logging": logging,
            },
        }
    )


def sidecar_logging(serving: ServingSpec, settings: OperatorSettings = SETTINGS):
    cm = render_sidecar_configmap(serving, settings, model_id=17)
    return parse_config(yaml.safe_load(cm["data"]["sidecar.yaml"])).logging


def test_where_the_spec_is_silent_the_operators_defaults_apply():
    settings = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092",
        log_mode="ERRORS",
        log_success_sample_rate=0.5,
        log_error_sample_rate=0.25,
        log_max_payload_bytes=4096,
        log_oversize_payload="digest",
        log_non_json_payload="drop",
        log_redact=(RedactRule("instances[*].email", RedactAction.HASH),),
    )

    logging = sidecar_logging(mnist(), settings)

    assert logging.mode is LoggingMode.ERRORS
    assert (logging.success_sample_rate, logging.error_sample_rate) == (0.5, 0.25)
    assert (logging.max_payload_bytes, logging.oversize_payload) == (4096, OversizePolicy.DIGEST)
    assert logging.non_json_payload is NonJsonPolicy.DROP
    assert logging.redact == (RedactRule("instances[*].email", RedactAction.HASH),)


def test_the_builtin_defaults_log_everything_with_a_256_kib_payload_limit():
    logging = sidecar_logging(mnist())

    assert logging.mode is LoggingMode.ALL
    assert (logging.success_sample_rate, logging.error_sample_rate) == (1.0, 1.0)
    assert (logging.max_payload_bytes, logging.oversize_payload) == (
        262144,
        OversizePolicy.TRUNCATE,
    )
    assert (logging.non_json_payload, logging.redact) == (None, ())
    kept = logging.policy().shape(b"<not json>", Part.REQUEST)  # no rule: nothing to hide
    assert (kept.text, kept.marks()) == ("<not json>", [])


NOT_JSON = b'{"instances": [{"email": "ada@example.com"}]}x'  # JSON and a stray character
EMAIL_RULE = [{"path": "instances[*].email"}]


@pytest.mark.parametrize(
    ("redact", "in_spec", "operator_default", "logged"),
    [
        # Rules, nothing said anywhere: redaction fails closed.
        (EMAIL_RULE, None, "", "dropped"),
        # Rules, the operator's default said: it applies where the spec is silent.
        (EMAIL_RULE, None, "keep", "as it came"),
        (EMAIL_RULE, None, "drop", "dropped"),
        # Rules, the spec said: it wins over whatever the operator says.
        (EMAIL_RULE, "keep", "", "as it came"),
        (EMAIL_RULE, "keep", "drop", "as it came"),
        (EMAIL_RULE, "keep", "keep", "as it came"),
        (EMAIL_RULE, "drop", "", "dropped"),
        (EMAIL_RULE, "drop", "keep", "dropped"),
        (EMAIL_RULE, "drop", "drop", "dropped"),
        # No rules, nothing said anywhere: nothing to protect, kept.
        ([], None, "", "as it came"),
        ([], None, "keep", "as it came"),
        ([], None, "drop", "dropped"),
        ([], "keep", "", "as it came"),
        ([], "keep", "drop", "as it came"),
        ([], "keep", "keep", "as it came"),
        ([], "drop", "", "dropped"),
        ([], "drop", "keep", "dropped"),
        ([], "drop", "drop", "dropped"),
    ],
)
def test_a_non_json_payload_is_kept_only_where_no_rule_applies_or_keep_is_said(
    redact, in_spec, operator_default, logged
):
    settings = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092", log_non_json_payload=operator_default
    )
    payloads = {"nonJson": in_spec} if in_spec else {}

    logging = sidecar_logging(mnist(redact=redact, payloads=payloads), settings)
    shaped = logging.policy().shape(NOT_JSON, Part.REQUEST)

    if logged == "dropped":
        assert (shaped.text, shaped.marks()) == ("", ["dropped"])
    else:
        assert (shaped.text, shaped.marks()) == (NOT_JSON.decode(), [])


def test_the_operators_redaction_rules_make_a_non_json_payload_dropped_too():
    settings = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092", log_redact=(RedactRule("instances[*].email"),)
    )

    shaped = sidecar_logging(mnist(), settings).policy().shape(NOT_JSON, Part.REQUEST)

    assert (shaped.text, shaped.marks()) == ("", ["dropped"])


def test_the_non_json_setting_is_unset_keep_or_drop_and_a_bad_one_is_named():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    variable = "MODELSERVING_LOG_NON_JSON_PAYLOAD"

    assert settings_from(parser.parse_args([]), {}).log_non_json_payload == ""
    assert settings_from(parser.parse_args([]), {variable: ""}).log_non_json_payload == ""
    assert settings_from(parser.parse_args([]), {variable: "keep"}).log_non_json_payload == "keep"
    chosen = settings_from(parser.parse_args(["--log-non-json-payload", "drop"]), {variable: ""})
    assert chosen.log_non_json_payload == "drop"
    with pytest.raises(SettingsError, match=variable):
        settings_from(parser.parse_args([]), {variable: "hide"})


def test_where_the_spec_speaks_it_wins_field_by_field():
    settings = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092",
        log_success_sample_rate=0.5,
        log_max_payload_bytes=4096,
        log_redact=(RedactRule("instances[*].email"),),
    )
    serving = mnist(
        mode="PREDICTIONS",
        sampling={"errorRate": 0.1},  # successRate left to the operator
        payloads={"maxBytes": 0},
        redact=[{"path": "predictions[*]", "action": "drop", "payload": "response"}],
    )

    logging = sidecar_logging(serving, settings)

    assert logging.mode is LoggingMode.PREDICTIONS
    assert (logging.success_sample_rate, logging.error_sample_rate) == (0.5, 0.1)
    assert logging.max_payload_bytes == 0  # 0 is said, not silence
    assert logging.redact == (
        RedactRule("predictions[*]", RedactAction.DROP, RedactTarget.RESPONSE),
    )


def test_durability_is_the_specs_else_the_operators_else_spooled():
    buffered_by_default = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092", log_durability="buffered"
    )

    assert sidecar_logging(mnist()).durability is LogDurability.SPOOLED
    assert sidecar_logging(mnist(), buffered_by_default).durability is LogDurability.BUFFERED
    said = mnist(durability="spooled")
    assert sidecar_logging(said, buffered_by_default).durability is LogDurability.SPOOLED
    assert sidecar_logging(mnist(durability="buffered")).durability is LogDurability.BUFFERED


def test_the_producers_compression_is_the_operators_zstd_by_default():
    assert sidecar_logging(mnist()).compression is LogCompression.ZSTD
    gzip = OperatorSettings(kafka_bootstrap_servers="kafka:9092", log_compression="gzip")
    assert sidecar_logging(mnist(), gzip).compression is LogCompression.GZIP


def test_an_empty_redact_list_in_the_spec_turns_the_operators_rules_off():
    settings = OperatorSettings(
        kafka_bootstrap_servers="kafka:9092", log_redact=(RedactRule("instances[*].email"),)
    )
    assert sidecar_logging(mnist(redact=[]), settings).redact == ()


def test_operator_mode_none_logs_only_servings_whose_spec_asks():
    settings = OperatorSettings(kafka_bootstrap_servers="kafka:9092", log_mode="NONE")

    assert sidecar_logging(mnist(), settings).mode is LoggingMode.NONE
    assert not mnist().logging_requested(settings)
    assert sidecar_logging(mnist(mode="ALL"), settings).mode is LoggingMode.ALL


def test_logging_settings_come_from_flags_and_environment_and_bad_ones_are_named():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    env = {
        "MODELSERVING_LOG_MODE": "ERRORS",
        "MODELSERVING_LOG_SUCCESS_SAMPLE_RATE": "0.1",
        "MODELSERVING_LOG_REDACT": '[{"path": "instances[*].ssn", "action": "drop"}]',
    }
    settings = settings_from(parser.parse_args(["--log-max-payload-bytes", "1024"]), env)

    assert (settings.log_mode, settings.log_success_sample_rate) == ("ERRORS", 0.1)
    assert settings.log_max_payload_bytes == 1024
    assert settings.log_redact == (RedactRule("instances[*].ssn", RedactAction.DROP),)
    for name, bad in (
        ("MODELSERVING_LOG_MODE", "SOME"),
        ("MODELSERVING_LOG_ERROR_SAMPLE_RATE", "2"),
        ("MODELSERVING_LOG_OVERSIZE_PAYLOAD", "chop"),
        ("MODELSERVING_LOG_REDACT", '[{"path": "a..b"}]'),
        ("MODELSERVING_LOG_REDACT", "not json"),
    ):
        with pytest.raises(SettingsError, match=name):
            settings_from(parser.parse_args([]), {name: bad})


def test_every_serving_gets_an_account_allowed_to_publish_on_its_pod():
    children = render_children(mnist(), SETTINGS, 17)
    kinds = {(c["kind"], c["metadata"]["name"]): c for c in children}

    binding = kinds[("RoleBinding", "mnist-sidecar-log-status")]
    assert binding["roleRef"]["name"] == SETTINGS.sidecar_log_status_cluster_role
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mnist-sidecar", "namespace": "demo"}
    ]
    assert ("ServiceAccount", "mnist-sidecar") in kinds
    sidecar = kinds[("Deployment", "mnist")]["spec"]["template"]["spec"]["containers"][1]
    assert [e["name"] for e in sidecar["env"]] == ["POD_NAME", "POD_NAMESPACE"]
    # Its model report is published whether or not it logs.
    quiet = render_children(mnist(enabled=False), SETTINGS, 17)
    names = {(c["kind"], c["metadata"]["name"]) for c in quiet}
    assert ("RoleBinding", "mnist-sidecar-log-status") in names
    assert ("ServiceAccount", "mnist-sidecar") in names


def test_logging_ready_takes_the_worst_pods_state_and_the_oldest_records_age():
    topic = LoggingState(True, "TopicReady", "records go to the topic t")
    flowing = summarize(
        spool_bytes=0,
        spool_max_bytes=100,
        waiting_records=0,
        oldest_age_seconds=0,
        kafka_reachable=True,
        refusing=False,
    )
    unreachable = summarize(
        spool_bytes=10,
        spool_max_bytes=100,
        waiting_records=50,
        oldest_age_seconds=42.4,
        kafka_reachable=False,
        refusing=False,
    )
    full = summarize(
        spool_bytes=99,
        spool_max_bytes=100,
        waiting_records=900,
        oldest_age_seconds=7,
        kafka_reachable=False,
        refusing=True,
    )

    def pods(*summaries):
        return [{"name": f"p{i}", "logStatus": json.dumps(s)} for i, s in enumerate(summaries)]

    assert logging_from_pods(topic, pods(flowing, flowing)) == topic
    assert logging_from_pods(topic, [{"name": "p", "logStatus": None}, {"logStatus": "{"}]) == topic
    state = logging_from_pods(topic, pods(flowing, unreachable, full))
    assert (state.ready, state.reason) == (False, "SpoolFull")
    assert "950 records" in state.message and "oldest for 42 s" in state.message
    assert "p1: Kafka is unreachable, spool 10% full" in state.message
    filling = summarize(
        spool_bytes=60,
        spool_max_bytes=100,
        waiting_records=1,
        oldest_age_seconds=1,
        kafka_reachable=True,
        refusing=False,
    )
    assert filling["state"] == "SpoolFilling"


FLOWING = summarize(
    spool_bytes=0,
    spool_max_bytes=100,
    waiting_records=3,
    oldest_age_seconds=0,
    kafka_reachable=True,
    refusing=False,
)
UNREACHABLE = summarize(
    spool_bytes=10,
    spool_max_bytes=100,
    waiting_records=50,
    oldest_age_seconds=42.4,
    kafka_reachable=False,
    refusing=False,
)
OPERATOR_CUT_OFF = LoggingState(False, "KafkaUnreachable", "cannot reach the brokers at k:9092")


def pods_reporting(*summaries: dict) -> list[dict]:
    return [{"name": f"p{i}", "logStatus": json.dumps(s)} for i, s in enumerate(summaries)]


def test_logging_ready_follows_the_pods_that_deliver_when_the_operator_cannot_reach_kafka():
    # The pods deliver: True, saying that the operator cannot reach the brokers, and why
    state = logging_from_pods(
        OPERATOR_CUT_OFF, pods_reporting(FLOWING, FLOWING), operator_unseen=True
    )
    assert (state.ready, state.reason) == (True, OPERATOR_KAFKA_UNREACHABLE)
    assert state.message.startswith("the pods deliver: 2 pods report their producers reach")
    assert "6 records waiting" in state.message
    assert "operator cannot reach them" in state.message and "NetworkPolicy" in state.message
    assert state.message.endswith("KafkaUnreachable: cannot reach the brokers at k:9092")
    # No pod reports yet, or none that reaches Kafka: the operator's word stands
    assert logging_from_pods(OPERATOR_CUT_OFF, [], operator_unseen=True) == OPERATOR_CUT_OFF
    no_word = [{"name": "p", "logStatus": None}]
    assert logging_from_pods(OPERATOR_CUT_OFF, no_word, operator_unseen=True) == OPERATOR_CUT_OFF
    # A pod in trouble: the pods' word, False, as when the topic was checked
    state = logging_from_pods(
        OPERATOR_CUT_OFF, pods_reporting(FLOWING, UNREACHABLE), operator_unseen=True
    )
    assert (state.ready, state.reason) == (False, "KafkaUnreachable")
    assert "p1: Kafka is unreachable" in state.message
    # A topic the operator checked: flowing pods leave it as it is
    topic = LoggingState(True, "TopicReady", "records go to the topic t")
    assert logging_from_pods(topic, pods_reporting(FLOWING)) == topic


class CutOffKafka:
    """The operator's topic keeper where its own connection to Kafka fails."""

    def __init__(self) -> None:
        self.asked = 0

    async def ensure(self, *args: Any, **kwargs: Any) -> TopicOutcome:
        self.asked += 1
        return TopicOutcome(OPERATOR_CUT_OFF)


async def test_logging_ready_does_not_flip_as_pod_events_and_retries_alternate(monkeypatch):
    """The operator cannot reach Kafka and the pods deliver: a reconcile that checks Kafka (the
    serving's event, a retry) and one that does not (a pod's event) say the same."""
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(
        reconcile.kopf,
        "event",
        lambda _ref, *, type, reason, message: events.append((type, reason)),
    )
    topics = CutOffKafka()
    settings = OperatorSettings(kafka_bootstrap_servers="k:9092")
    rec = reconcile.Reconciler(kube=None, settings=settings, topics=topics, model_ids=None)
    body = {
        "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1"},
        "spec": {"model": {"version": 1, "basePath": "s3://m"}},
    }
    spec = ServingSpec.from_body(body)
    delivering = pods_reporting(FLOWING)

    said = []
    for check_kafka in (True, False, True, False, False, True):
        state = await reconcile._logging_state(rec, body, spec, check_kafka)
        state = reconcile._logging_with_pods(rec, spec, state, delivering)
        said.append((state.ready, state.reason))
        body["status"] = {
            "conditions": [
                {
                    "type": "LoggingReady",
                    "reason": state.reason,
                    "status": str(state.ready),
                    "message": state.message,
                }
            ]
        }

    assert set(said) == {(True, OPERATOR_KAFKA_UNREACHABLE)} and topics.asked == 3
    assert events == [("Warning", "KafkaUnreachable")]  # told once, not at every retry
    # Retried while the operator cannot reach Kafka, as any failure to: it may be fixed
    assert ("demo", "mnist") in rec.kafka.unseen
    # The pods in trouble after all: False, with their word, also on a pod's event
    state = await reconcile._logging_state(rec, body, spec, False)
    state = reconcile._logging_with_pods(rec, spec, state, pods_reporting(UNREACHABLE))
    assert (state.ready, state.reason) == (False, "KafkaUnreachable")
    assert "records wait in the pods' spools" in state.message
