"""What the inference log keeps of an exchange: sampling by request id, mode ERRORS, redaction at
JSON paths, the non-JSON policy, the payload size limit, the `payload` header, and the sidecar
config keys that set them (errors name the key). The cost per request of each is printed."""

from __future__ import annotations

import hashlib
import json
import uuid

import prometheus_client
import pytest

from modelserving.inferencelog.record import HEADER_PAYLOAD
from modelserving_sidecar.config import ConfigError, LoggingConfig, LoggingMode, parse_config
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.metrics import InferenceLogMetrics
from modelserving_sidecar.log.policy import (
    MASK,
    LogPolicy,
    NonJsonPolicy,
    OversizePolicy,
    Part,
    RedactAction,
    RedactPathError,
    RedactRule,
    RedactTarget,
    parse_redact_path,
)
from modelserving_sidecar.log.records import SpoolRecordMaker
from tests.support.exchanges import an_exchange
from tests.support.reference_records import build_spool_record, shape_exchange

BODY = {
    "signature_name": "serving_default",
    "instances": [
        {"email": "ada@example.com", "ssn": "123-45-6789", "x": [1.0, 2.0]},
        {"email": "bob@example.com", "ssn": "987-65-4321", "x": [3.0, 4.0]},
    ],
}


def exchange(status: int = 200, request: bytes | None = None, response: bytes = b"{}") -> Exchange:
    return an_exchange(
        request_id=str(uuid.uuid4()),
        status=status,
        request_body=json.dumps(BODY).encode() if request is None else request,
        response_body=response,
        model_version=1,
        traceparent=None,
    )


def test_a_request_id_is_always_sampled_the_same_way_and_the_rate_holds():
    policy = LogPolicy(success_rate=0.1, error_rate=0.5, sample_key=b"the serving's key")
    ids = [str(uuid.uuid4()) for _ in range(20_000)]

    first = [policy.sampled(i, 200) for i in ids]
    another_pod = LogPolicy(success_rate=0.1, sample_key=b"the serving's key")
    again = [another_pod.sampled(i, 200) for i in ids]
    errors = [policy.sampled(i, 503) for i in ids]

    assert first == again
    assert 0.09 < sum(first) / len(ids) < 0.11
    assert 0.48 < sum(errors) / len(ids) < 0.52
    # A lower rate keeps a subset of what a higher one keeps: raising it only adds records.
    assert all(policy.sampled(i, 503) for i, kept in zip(ids, first, strict=True) if kept)


def test_which_ids_are_sampled_depends_on_the_servings_key_that_callers_do_not_know():
    ids = [f"chosen-{n}" for n in range(20_000)]  # ids a caller might pick

    def kept(key: bytes) -> list[bool]:
        return [LogPolicy(success_rate=0.1, sample_key=key).sampled(i, 200) for i in ids]

    mine, same, other = kept(b"serving one"), kept(b"serving one"), kept(b"serving two")
    assert mine == same
    assert mine != other
    # Under each key about a tenth kept, and the two tenths are nearly independent: an id
    # known to be dropped under one key is no more likely dropped under another.
    assert 0.09 < sum(mine) / len(ids) < 0.11 and 0.09 < sum(other) / len(ids) < 0.11
    both = sum(a and b for a, b in zip(mine, other, strict=True))
    assert both / len(ids) < 0.02  # 0.01 when independent
    # A sidecar given no key draws its own: it agrees with no other.
    assert LoggingConfig().sample_key != LoggingConfig().sample_key
    config = LoggingConfig()
    assert [config.policy().sampled(i, 200) for i in ids[:2000]] == [
        config.policy().sampled(i, 200) for i in ids[:2000]
    ]
    assert config.sample_key not in repr(config)


def test_errors_mode_keeps_only_answers_that_are_not_2xx():
    policy = LoggingConfig(mode=LoggingMode.ERRORS).policy()

    assert [policy.sampled("r", s) for s in (200, 201, 299)] == [False] * 3
    assert [policy.sampled("r", s) for s in (400, 404, 413, 500, 502, 503, 504)] == [True] * 7


def test_redaction_drops_masks_and_hashes_at_json_paths_in_the_chosen_payloads():
    policy = LogPolicy(
        rules=(
            RedactRule("instances[*].email", RedactAction.MASK),
            RedactRule("$.instances[*].ssn", RedactAction.DROP, RedactTarget.REQUEST),
            RedactRule("signature_name", RedactAction.HASH, RedactTarget.RESPONSE),
        )
    )
    body = json.dumps(BODY).encode()

    request = policy.shape(body, Part.REQUEST)
    response = policy.shape(body, Part.RESPONSE)

    logged = json.loads(request.text)
    assert request.redacted and request.marks() == ["redacted"]
    assert [i["email"] for i in logged["instances"]] == [MASK, MASK]
    assert all("ssn" not in i for i in logged["instances"])
    assert logged["signature_name"] == "serving_default"
    answered = json.loads(response.text)
    assert answered["instances"][0]["ssn"] == "123-45-6789"
    digest = hashlib.sha256(b'"serving_default"').hexdigest()
    assert answered["signature_name"] == f"sha256:{digest}"
    for secret in ("ada@example.com", "bob@example.com", "123-45-6789"):
        assert secret not in request.text


def test_redaction_paths_reach_keys_items_and_every_key():
    doc = {"a": {"b": [{"c": 1}, {"c": 2}]}, "odd.key": 3, "m": {"x": 1, "y": 2}, "l": [1, 2, 3]}
    policy = LogPolicy(
        rules=(
            RedactRule("a.b[1].c", RedactAction.MASK),
            RedactRule("['odd.key']", RedactAction.DROP),
            RedactRule("m.*", RedactAction.MASK),
            RedactRule("l[*]", RedactAction.DROP),
            RedactRule("not.there[*].at_all", RedactAction.DROP),
        )
    )

    logged = json.loads(policy.shape(json.dumps(doc).encode(), Part.REQUEST).text)

    assert logged == {"a": {"b": [{"c": 1}, {"c": MASK}]}, "m": {"x": MASK, "y": MASK}, "l": []}
    untouched = policy.shape(b'{"other": 1}', Part.REQUEST)
    assert (untouched.text, untouched.redacted) == ('{"other": 1}', False)


@pytest.mark.parametrize("path", ["", "a..b", "a.", "[x]", "a[*]b", "a[-1]", "$."])
def test_malformed_redaction_paths_are_refused(path):
    with pytest.raises(RedactPathError):
        parse_redact_path(path)


NOT_JSON = b'{"instances": [{"email": "ada@example.com"}]}x'  # JSON and a stray character
EMAIL_RULE = (RedactRule("instances[*].email"),)


@pytest.mark.parametrize(
    ("rules", "said", "logged"),
    [
        # Rules that cannot be applied: unless `keep` is said, nothing of the payload is logged.
        (EMAIL_RULE, None, "dropped"),
        (EMAIL_RULE, NonJsonPolicy.DROP, "dropped"),
        (EMAIL_RULE, NonJsonPolicy.KEEP, "as it came"),
        # No rule: nothing to protect, so only `drop` said leaves it out.
        ((), None, "as it came"),
        ((), NonJsonPolicy.KEEP, "as it came"),
        ((), NonJsonPolicy.DROP, "dropped"),
    ],
)
def test_a_payload_that_is_not_json_is_dropped_where_rules_apply_unless_keep_is_said(
    rules, said, logged
):
    shaped = LogPolicy(rules=rules, non_json=said).shape(NOT_JSON, Part.REQUEST)

    if logged == "dropped":
        assert (shaped.text, shaped.marks()) == ("", ["dropped"])
    else:
        assert (shaped.text, shaped.marks()) == (NOT_JSON.decode(), [])


def test_unset_the_non_json_policy_follows_the_rules_of_each_payload():
    """A rule for requests only protects nothing in responses: those are kept as they came."""
    policy = LogPolicy(rules=(RedactRule("instances[*].email", target=RedactTarget.REQUEST),))

    request = policy.shape(NOT_JSON, Part.REQUEST)
    response = policy.shape(b"<html>bad gateway</html>", Part.RESPONSE)
    json_request = policy.shape(b'{"instances": [{"email": "ada@example.com"}]}', Part.REQUEST)

    assert (request.text, request.marks()) == ("", ["dropped"])
    assert (response.text, response.marks()) == ("<html>bad gateway</html>", [])
    assert json.loads(json_request.text) == {"instances": [{"email": MASK}]}


def test_a_json_payload_naming_a_key_twice_is_one_the_rules_cannot_be_applied_to():
    """TF Serving reads the first `instances` (with the email), Python's json the last: masking
    what json sees would log the email as it came."""
    body = b'{"instances": [{"email": "ada@example.com"}], "instances": []}'

    unset = LogPolicy(rules=EMAIL_RULE).shape(body, Part.REQUEST)
    kept = LogPolicy(rules=EMAIL_RULE, non_json=NonJsonPolicy.KEEP).shape(body, Part.REQUEST)
    no_rule = LogPolicy(non_json=NonJsonPolicy.DROP).shape(body, Part.REQUEST)

    assert (unset.text, unset.marks()) == ("", ["dropped"])
    assert (kept.text, kept.marks()) == (body.decode(), [])  # as asked
    assert (no_rule.text, no_rule.marks()) == (body.decode(), [])  # JSON, nothing to protect


def test_a_record_whose_payload_was_dropped_says_so_and_is_counted():
    registry = prometheus_client.CollectorRegistry()
    metrics = InferenceLogMetrics(registry)
    settings = LoggingConfig(mode=LoggingMode.ALL, redact=EMAIL_RULE)
    maker = SpoolRecordMaker(_model(), settings, "pod-1", metrics.count_changes)

    records = [maker.make(exchange(400, NOT_JSON, b'{"error": "bad JSON"}')) for _ in range(3)]

    for record in records:
        assert dict(record.headers)[HEADER_PAYLOAD] == b"request=dropped"
        assert b"ada@example.com" not in record.value
    dropped = "modelserving_inference_log_payloads_dropped_total"
    assert registry.get_sample_value(dropped, {"part": "request"}) == 3
    assert registry.get_sample_value(dropped, {"part": "response"}) == 0


def test_an_oversized_payload_is_cut_or_replaced_by_its_length_and_sha256():
    body = ("é" * 100).encode()  # 200 bytes of two-byte characters
    cut = LogPolicy(max_payload_bytes=51).shape(body, Part.REQUEST)
    digest = LogPolicy(max_payload_bytes=51, oversize=OversizePolicy.DIGEST).shape(
        body, Part.REQUEST
    )
    small = LogPolicy(max_payload_bytes=200).shape(body, Part.REQUEST)

    assert cut.text == "é" * 25 and cut.marks() == ["cut"]  # a split character is left out
    assert json.loads(digest.text) == {"bytes": 200, "sha256": hashlib.sha256(body).hexdigest()}
    assert digest.marks() == ["digest"]
    assert (small.text, small.marks()) == ("é" * 100, [])


def test_the_payload_header_says_what_was_done_to_which_payload():
    settings = LoggingConfig(
        mode=LoggingMode.ALL,
        max_payload_bytes=40,
        redact=(RedactRule("instances[*].email", RedactAction.MASK, RedactTarget.REQUEST),),
    )
    ex = exchange(response=b'{"predictions": [[1.0]]}')

    record = build_spool_record(ex, _model(), settings, "pod-1")
    plain = build_spool_record(exchange(request=b"{}"), _model(), settings, "pod-1")

    assert dict(record.headers)[HEADER_PAYLOAD] == b"request=redacted+cut"
    assert HEADER_PAYLOAD not in dict(plain.headers)
    assert b"ada@example.com" not in record.value


def test_the_modes_leave_out_a_payload_before_any_work_is_done_on_it():
    policy = LogPolicy(max_payload_bytes=1)
    request, response = shape_exchange(exchange(), LoggingMode.PREDICTIONS, policy)
    assert (request.text, request.marks(), response.marks()) == ("", [], ["cut"])


def test_sidecar_config_keys_of_the_policy_parse_and_errors_name_the_key():
    base = {
        "serving": {"name": "s", "namespace": "n"},
        "model": {"name": "m", "version": 1, "modelId": 1},
    }
    logging = {
        "mode": "ERRORS",
        "topic": "t",
        "bootstrapServers": "k:9092",
        "successSampleRate": 0.25,
        "errorSampleRate": 1,
        "maxPayloadBytes": 1024,
        "oversizePayload": "digest",
        "nonJsonPayload": "drop",
        "redact": [{"path": "instances[*].email", "action": "hash", "payload": "request"}],
    }
    config = parse_config({**base, "logging": logging}).logging

    assert config.mode is LoggingMode.ERRORS
    assert (config.success_sample_rate, config.error_sample_rate) == (0.25, 1.0)
    assert (config.max_payload_bytes, config.oversize_payload) == (1024, OversizePolicy.DIGEST)
    assert config.non_json_payload is NonJsonPolicy.DROP
    assert config.redact == (
        RedactRule("instances[*].email", RedactAction.HASH, RedactTarget.REQUEST),
    )
    for key, bad, named in (
        ("successSampleRate", 1.5, "logging.successSampleRate"),
        ("maxPayloadBytes", -1, "logging.maxPayloadBytes"),
        ("oversizePayload", "chop", "logging.oversizePayload"),
        ("redact", [{"path": "a..b"}], "logging.redact[0].path"),
        ("redact", [{"path": "a", "action": "burn"}], "logging.redact[0].action"),
        ("redact", [{"path": "a", "when": 1}], "logging.redact[0]"),
    ):
        with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
            parse_config({**base, "logging": {**logging, key: bad}})


def test_the_counters_of_requests_seen_and_sampled_out_are_exposed():
    registry = prometheus_client.CollectorRegistry()
    metrics = InferenceLogMetrics(registry)
    metrics.counts.seen[:] = [7, 3]
    metrics.counts.sampled_out[:] = [5, 0]
    request = LogPolicy(max_payload_bytes=1).shape(b"{}", Part.REQUEST)
    metrics.logged.inc()
    metrics.count_changes(request, LogPolicy().shape(b"{}", Part.RESPONSE))

    def value(name, **labels):
        return registry.get_sample_value(f"modelserving_inference_log_{name}", labels)

    assert value("requests_seen_total", outcome="success") == 7
    assert value("requests_seen_total", outcome="error") == 3
    assert value("requests_sampled_out_total", outcome="success") == 5
    assert value("records_logged_total") == 1
    assert value("payloads_cut_total", part="request", how="truncate") == 1
    assert value("payloads_redacted_total", part="response") == 0


def _model():
    from modelserving_sidecar.config import ModelIdentity

    return ModelIdentity(name="mnist", version=1, model_id=17)
