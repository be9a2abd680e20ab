"""The schema registry client (modelserving/inferencelog/schema_registry.py, and the operator's
registration in modelserving_operator/kafka/schema_registry.py): its requests checked against
the examples of Confluent's API reference, its reading of the documented answers and errors,
and the whole registration and lookup against the registry stand-in
(tests/support/schema_registry_standin.py), whose other side the real client also tests."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import replace

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from modelserving.inferencelog.record import SCHEMA
from modelserving.inferencelog.schema_registry import (
    CONTENT_TYPE,
    REGISTRY_AUTHENTICATION_FAILED,
    REGISTRY_CREDENTIALS_MISSING,
    REGISTRY_FAILED,
    REGISTRY_FORBIDDEN,
    REGISTRY_TLS_FAILED,
    REGISTRY_UNREACHABLE,
    SCHEMA_INCOMPATIBLE,
    SCHEMA_INVALID,
    SCHEMA_NOT_REGISTERED,
    Registered,
    RegistryProblem,
    SchemaRegistry,
    ask,
    body_of,
    compatibility_request,
    headers,
    lookup_request,
    problem_of,
    register_request,
    registered_id,
    schema_by_id_request,
    schema_of,
    subject_of,
    url_of,
)
from modelserving_operator.kafka.schema_registry import (
    SchemaRegistrySpec,
    logging_state,
    parse_schema_registry,
    register_schema,
    registry_of,
    what_to_check,
)
from tests.support.schema_registry_standin import SchemaRegistryStandIn, running_registry
from tests.support.scripts import load_script

TOPIC = "inferencelog-fraud"
SUBJECT = "inferencelog-fraud-value"
PASSWORD = "s3cret-pa55"

# Recorded from Confluent's documentation: the API reference
# (https://docs.confluent.io/platform/current/schema-registry/develop/api.html) and its usage
# examples (.../schema-registry/develop/using.html), as (method, URL, Content-Type, body) and
# the answers shown.
DOCUMENTED_REGISTER = (
    "POST",
    "http://localhost:8081/subjects/Kafka-value/versions",
    "application/vnd.schemaregistry.v1+json",
    '{"schema": "{\\"type\\": \\"string\\"}"}',
)
DOCUMENTED_REGISTER_ANSWER = '{"id":1}'
# "Check if a schema has already been registered under the specified subject", and the
# answer's fields; "Get the schema string identified by the input ID".
DOCUMENTED_LOOKUP = (
    "POST",
    "http://localhost:8081/subjects/Kafka-value",
    "application/vnd.schemaregistry.v1+json",
    '{"schema": "{\\"type\\": \\"string\\"}"}',
)
DOCUMENTED_LOOKUP_ANSWER = (
    '{"subject": "Kafka-value", "id": 1, "version": 3, "schema": "{\\"type\\": \\"string\\"}"}'
)
DOCUMENTED_BY_ID = ("GET", "http://localhost:8081/schemas/ids/1")
DOCUMENTED_BY_ID_ANSWER = '{"schema": "{\\"type\\": \\"string\\"}"}'
DOCUMENTED_SET_COMPATIBILITY = (
    "PUT",
    "http://localhost:8081/config/Kafka-value",
    "application/vnd.schemaregistry.v1+json",
    '{"compatibility": "NONE"}',
)
DOCUMENTED_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)
DOCUMENTED_ERRORS = {
    "incompatible": (
        409,
        '{"error_code": 409, "message": "Schema being registered is incompatible with an '
        'earlier schema for subject \\"Kafka-value\\""}',
    ),
    "invalid": (
        422,
        '{"error_code": 42201, "message": "Either the input schema or one its references is '
        'invalid"}',
    ),
    "unauthorized": (401, '{"error_code": 401, "message": "Unauthorized"}'),
    "subject not found": (404, '{"error_code": 40401, "message": "Subject not found"}'),
    "server error": (
        500,
        '{"error_code": 50001, "message": "Error in the backend data store"}',
    ),
}
# RFC 7617's example of basic auth, the scheme the registries take.
RFC7617_USER, RFC7617_PASSWORD = "Aladdin", "open sesame"
RFC7617_AUTHORIZATION = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="

LOCAL = SchemaRegistry("http://localhost:8081")


def as_sent(registry: SchemaRegistry, request) -> tuple[str, str, str, dict]:
    body = body_of(request)
    assert body is not None
    return (
        request.method,
        url_of(registry, request),
        headers(registry, request)["Content-Type"],
        json.loads(body),
    )


def documented(example: tuple[str, str, str, str]) -> tuple[str, str, str, dict]:
    method, url, content_type, body = example
    return method, url, content_type, json.loads(body)


def test_registering_is_the_documented_request():
    method, url, content_type, body = as_sent(
        LOCAL, register_request("Kafka-value", {"type": "string"})
    )
    doc_method, doc_url, doc_type, doc_body = documented(DOCUMENTED_REGISTER)
    assert (method, url, content_type) == (doc_method, doc_url, doc_type)
    # The same keys, and the same schema in the string (written without spaces).
    assert body.keys() == doc_body.keys()
    assert json.loads(body["schema"]) == json.loads(doc_body["schema"])
    assert headers(LOCAL, register_request("Kafka-value", {"type": "string"}))["Accept"] == (
        DOCUMENTED_ACCEPT
    )
    assert registered_id(200, json.loads(DOCUMENTED_REGISTER_ANSWER)) == 1


def test_setting_the_compatibility_is_the_documented_request():
    assert as_sent(LOCAL, compatibility_request("Kafka-value", "NONE")) == documented(
        DOCUMENTED_SET_COMPATIBILITY
    )
    assert compatibility_request("Kafka-value").body == {"compatibility": "BACKWARD"}


def test_looking_up_and_fetching_by_id_are_the_documented_requests():
    method, url, content_type, body = as_sent(
        LOCAL, lookup_request("Kafka-value", {"type": "string"})
    )
    assert (method, url, content_type) == documented(DOCUMENTED_LOOKUP)[:3]
    assert json.loads(body["schema"]) == json.loads(documented(DOCUMENTED_LOOKUP)[3]["schema"])
    assert registered_id(200, json.loads(DOCUMENTED_LOOKUP_ANSWER)) == 1
    by_id = schema_by_id_request(1)
    assert (by_id.method, url_of(LOCAL, by_id), body_of(by_id)) == (*DOCUMENTED_BY_ID, None)
    assert schema_of(200, json.loads(DOCUMENTED_BY_ID_ANSWER)) == {"type": "string"}
    # Not an Avro schema's JSON, or no schema: nothing a reader could decode with.
    assert schema_of(200, {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}) is None
    assert schema_of(200, {"schema": "{not json"}) is None
    assert schema_of(404, {"error_code": 40403, "message": "Schema not found"}) is None


def test_the_subject_is_the_topics_value_subject_and_one_path_segment_below_the_url():
    assert subject_of(TOPIC) == SUBJECT
    apicurio = SchemaRegistry("https://registry.example/apis/ccompat/v7/")
    assert url_of(apicurio, register_request("a/b-value", SCHEMA)) == (
        "https://registry.example/apis/ccompat/v7/subjects/a%2Fb-value/versions"
    )


def test_basic_auth_is_rfc7617s_and_no_password_is_shown():
    registry = SchemaRegistry(
        f"https://{RFC7617_USER}:{RFC7617_PASSWORD}@registry.example:8081/",
        username=RFC7617_USER,
        password=RFC7617_PASSWORD,
    )
    assert headers(registry, compatibility_request(SUBJECT))["Authorization"] == (
        RFC7617_AUTHORIZATION
    )
    assert "Authorization" not in headers(LOCAL, compatibility_request(SUBJECT))
    assert registry.shown_url == "https://registry.example:8081/"
    assert RFC7617_PASSWORD not in repr(registry)


@pytest.mark.parametrize(
    ("example", "reason", "words"),
    [
        ("incompatible", SCHEMA_INCOMPATIBLE, "is incompatible with an earlier schema"),
        ("invalid", SCHEMA_INVALID, "error code 42201"),
        ("unauthorized", REGISTRY_AUTHENTICATION_FAILED, "user 'logger'"),
        ("subject not found", SCHEMA_NOT_REGISTERED, "Subject not found (error code 40401)"),
        ("server error", REGISTRY_FAILED, "HTTP 500"),
    ],
)
def test_the_documented_errors_become_reasons_with_the_registrys_words(example, reason, words):
    registry = SchemaRegistry("http://localhost:8081", username="logger", password=PASSWORD)
    status, body = DOCUMENTED_ERRORS[example]
    problem = problem_of(
        registry, f"registering the schema under {SUBJECT}", status, json.loads(body)
    )
    assert problem.reason == reason
    assert words in problem.message
    assert "http://localhost:8081" in problem.message
    assert PASSWORD not in problem.message
    assert logging_state(problem).ready is False
    assert problem_of(registry, "", 403, None).reason == REGISTRY_FORBIDDEN
    # A registry that says a megabyte is quoted in part: the words go into a condition and a
    # pod's annotation.
    long = problem_of(registry, "x", 500, {"error_code": 50001, "message": "a" * 1_000_000})
    assert len(long.message) < 1_000 and long.message.endswith("… (error code 50001)")


async def test_the_schema_is_registered_under_the_topics_subject_with_backward_compatibility():
    standin = SchemaRegistryStandIn()
    standin.global_compatibility = "NONE"  # the subject's own level is set, whatever this one
    async with running_registry(standin) as (_, url):
        first = await register_schema(SchemaRegistry(url), SUBJECT, SCHEMA)
        again = await register_schema(SchemaRegistry(url), SUBJECT, SCHEMA)
        # What a data team's client finds under the subject.
        client = SchemaRegistryClient({"url": url})
        latest = await asyncio.to_thread(client.get_latest_version, SUBJECT)
    assert first == again == Registered(SUBJECT, 1)
    assert (latest.schema_id, json.loads(latest.schema.schema_str)) == (1, SCHEMA)
    assert standin.compatibility == {SUBJECT: "BACKWARD"}
    assert [(r.method, r.path, r.content_type) for r in standin.seen[:2]] == [
        ("PUT", f"/config/{SUBJECT}", CONTENT_TYPE),
        ("POST", f"/subjects/{SUBJECT}/versions", CONTENT_TYPE),
    ]


async def test_a_lookup_finds_the_registered_id_and_says_when_there_is_none():
    standin = SchemaRegistryStandIn()
    async with running_registry(standin) as (_, url):
        registry = SchemaRegistry(url)
        lookup = ((lookup_request(SUBJECT, SCHEMA), f"looking the schema up under {SUBJECT}"),)
        before = await ask(registry, lookup)
        registered = await register_schema(registry, SUBJECT, SCHEMA)
        after = await ask(registry, lookup)
    assert isinstance(before, RegistryProblem)
    assert before.reason == SCHEMA_NOT_REGISTERED
    assert "Subject" in before.message and url in before.message
    assert isinstance(registered, Registered) and isinstance(after, tuple)
    assert registered_id(*after) == registered.schema_id


async def test_a_subject_holding_a_schema_ours_cannot_read_is_schema_incompatible():
    wider = {**SCHEMA, "fields": [{"name": "modelId", "type": "long"}, *SCHEMA["fields"][1:]]}
    async with running_registry() as (standin, url):
        await register_schema(SchemaRegistry(url), SUBJECT, wider)
        refused = await register_schema(SchemaRegistry(url), SUBJECT, SCHEMA)
        invalid = await register_schema(SchemaRegistry(url), "other-value", {"type": "nope"})
    assert isinstance(refused, RegistryProblem)
    assert refused.reason == SCHEMA_INCOMPATIBLE
    assert f"registering the schema under {SUBJECT}" in refused.message
    assert "modelId" in refused.message  # the registry's own words on what breaks
    assert isinstance(invalid, RegistryProblem) and invalid.reason == SCHEMA_INVALID
    assert standin.subjects == {SUBJECT: [1]}


async def test_credentials_are_sent_and_refused_ones_are_named_without_the_password():
    standin = SchemaRegistryStandIn(users={"logger": PASSWORD})
    async with running_registry(standin) as (_, url):
        right = SchemaRegistry(url, username="logger", password=PASSWORD)
        registered = await register_schema(right, SUBJECT, SCHEMA)
        wrong = await register_schema(replace(right, password="guess"), SUBJECT, SCHEMA)
        none = await register_schema(SchemaRegistry(url), SUBJECT, SCHEMA)
    assert registered == Registered(SUBJECT, 1)
    assert isinstance(wrong, RegistryProblem) and isinstance(none, RegistryProblem)
    assert wrong.reason == none.reason == REGISTRY_AUTHENTICATION_FAILED
    assert "user 'logger'" in wrong.message and "no credentials" in none.message
    assert url in wrong.message
    assert PASSWORD not in wrong.message + none.message and "guess" not in wrong.message


async def test_a_registry_that_cannot_be_reached_is_named_by_its_url():
    async with running_registry() as (_, url):
        pass  # its port closed again: nothing listens there now
    problem = await register_schema(SchemaRegistry(url), SUBJECT, SCHEMA, timeout=5)
    assert isinstance(problem, RegistryProblem)
    assert problem.reason == REGISTRY_UNREACHABLE
    assert f"the schema registry at {url} cannot be reached" in problem.message


async def test_tls_with_the_registrys_ca_and_refusals_without_it(tmp_path):
    certs = load_script("localenv/kafka_certs.py", "kafka_certs")
    ca = certs.make_ca()
    server = certs.issue(ca, "registry", server=True, hosts=("127.0.0.1",))
    (tmp_path / "server.pem").write_bytes(server.key_pem + server.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")
    async with running_registry(tls=context) as (_, url):
        trusting = SchemaRegistry(url, ca_pem=ca.cert_pem.decode())
        registered = await register_schema(trusting, SUBJECT, SCHEMA)
        other_ca = certs.make_ca("another CA").cert_pem.decode()
        untrusted = await register_schema(replace(trusting, ca_pem=other_ca), SUBJECT, SCHEMA)
        broken = await register_schema(replace(trusting, ca_pem="not a PEM"), SUBJECT, SCHEMA)
    assert url.startswith("https://")
    assert registered == Registered(SUBJECT, 1)
    assert isinstance(untrusted, RegistryProblem) and untrusted.reason == REGISTRY_TLS_FAILED
    assert "unable to get local issuer certificate" in untrusted.message
    assert isinstance(broken, RegistryProblem) and broken.reason == REGISTRY_TLS_FAILED


class Objects:
    """The API server's Secrets and ConfigMaps of the namespace `demo`, as the operator reads
    them: one get each."""

    def __init__(self, **objects: tuple[str, dict[str, str]]) -> None:
        self.objects = {
            (kind, name): {"data": _data(kind, data)} for name, (kind, data) in objects.items()
        }

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        assert namespace == "demo"
        return self.objects.get((kind, name))


def _data(kind: str, data: dict[str, str]) -> dict[str, str]:
    if kind != "Secret":
        return data
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def registry_spec(**block) -> SchemaRegistrySpec:
    return parse_schema_registry({"url": "https://registry.example", **block})


async def test_the_ca_and_credentials_are_read_from_their_secret_and_configmap():
    objects = Objects(
        **{
            "registry-user": ("Secret", {"username": "logger\n", "password": f"{PASSWORD}\n"}),
            "trust": ("ConfigMap", {"bundle.pem": "PEM"}),
        }
    )
    spec = registry_spec(
        ca={"configMapName": "trust", "key": "bundle.pem"},
        credentials={"secretName": "registry-user"},
    )
    registry = await registry_of(objects, "demo", spec)
    assert registry == SchemaRegistry("https://registry.example", "PEM", "logger", PASSWORD)


@pytest.mark.parametrize(
    ("block", "words"),
    [
        (
            {"credentials": {"secretName": "gone"}},
            "the Secret demo/gone named in spec.logging.kafka.schemaRegistry.credentials is "
            "missing",
        ),
        (
            {"credentials": {"secretName": "registry-user", "passwordKey": "pass"}},
            "the Secret demo/registry-user named in spec.logging.kafka.schemaRegistry.credentials "
            "has no entry pass",
        ),
        (
            {"ca": {"secretName": "registry-user"}},
            "the Secret demo/registry-user named in spec.logging.kafka.schemaRegistry.ca has no "
            "entry ca.crt",
        ),
    ],
)
async def test_a_missing_secret_or_entry_is_named(block, words):
    objects = Objects(**{"registry-user": ("Secret", {"username": "u", "password": PASSWORD})})
    problem = await registry_of(objects, "demo", registry_spec(**block))
    assert problem == RegistryProblem(REGISTRY_CREDENTIALS_MISSING, words)


async def test_refused_credentials_name_the_secret_and_its_entries_never_the_password():
    objects = Objects(**{"registry-user": ("Secret", {"username": "logger", "password": "guess"})})
    async with running_registry(SchemaRegistryStandIn(users={"logger": PASSWORD})) as (_, url):
        spec = parse_schema_registry({"url": url, "credentials": {"secretName": "registry-user"}})
        registry = await registry_of(objects, "demo", spec)
        assert isinstance(registry, SchemaRegistry)
        problem = await register_schema(registry, SUBJECT, SCHEMA)
    assert isinstance(problem, RegistryProblem)
    hint = what_to_check(problem.reason, spec)
    assert hint == (
        "check the user name and password in Secret registry-user (entries username and "
        "password; spec.logging.kafka.schemaRegistry.credentials)"
    )
    assert "guess" not in problem.message + hint
    assert what_to_check(problem.reason, replace(spec, credentials=None)) == (
        "the registry wants credentials: set spec.logging.kafka.schemaRegistry.credentials"
    )
    tls = registry_spec(ca={"secretName": "registry-ca"})
    assert what_to_check(REGISTRY_TLS_FAILED, tls) == (
        "check the CA in Secret registry-ca (entry ca.crt; spec.logging.kafka.schemaRegistry.ca)"
    )
    assert what_to_check(SCHEMA_INCOMPATIBLE, tls) == ""
