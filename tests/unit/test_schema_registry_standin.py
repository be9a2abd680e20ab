"""The schema registry stand-in (tests/support/schema_registry_standin.py), held to what the real
client does with it: `confluent-kafka`'s `SchemaRegistryClient` registers, fetches by id, sets
and checks compatibility, and its `AvroSerializer` and `AvroDeserializer` carry our records.

The client is synchronous (it blocks on its HTTP calls), so it runs in a thread beside the
stand-in's event loop."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import avro.io
import avro.schema
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from modelserving.inferencelog.record import (
    SCHEMA,
    InferenceLogEncoder,
    InferenceLogRecord,
    decode_record,
    encode_record,
)
from tests.support.schema_registry_standin import (
    CONTENT_TYPE,
    SchemaRegistryStandIn,
    reading_problems,
    running_registry,
)

TOPIC = "inferencelog-fraud"
SUBJECT = f"{TOPIC}-value"
SCHEMA_TEXT = json.dumps(SCHEMA)
RECORD = InferenceLogRecord(7, "fraud", 2, 1_700_000_000_123, 200, '{"x":[1]}', '{"y":[2.5]}')

T = TypeVar("T")


def with_field(field: dict[str, Any]) -> str:
    """The seed's schema with one more field at its end."""
    return json.dumps({**SCHEMA, "fields": [*SCHEMA["fields"], field]})


@pytest.fixture
async def registry() -> AsyncIterator[tuple[SchemaRegistryStandIn, str]]:
    async with running_registry() as running:
        yield running


async def call(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def test_the_same_schema_registered_again_gets_the_same_id(registry):
    _, url = registry
    client = SchemaRegistryClient({"url": url})
    first = await call(client.register_schema, SUBJECT, Schema(SCHEMA_TEXT, "AVRO"))
    # A fresh client (no cache) and the schema written with other spacing: the same id.
    again = await call(
        SchemaRegistryClient({"url": url}).register_schema,
        SUBJECT,
        Schema(json.dumps(SCHEMA, indent=2), "AVRO"),
    )
    elsewhere = await call(client.register_schema, "other-value", Schema(SCHEMA_TEXT, "AVRO"))
    assert first == again == elsewhere == 1

    fetched = await call(SchemaRegistryClient({"url": url}).get_schema, first)
    assert json.loads(fetched.schema_str) == SCHEMA
    assert await call(client.get_versions, SUBJECT) == [1]
    latest = await call(client.get_latest_version, SUBJECT)
    assert (latest.schema_id, latest.version, latest.subject) == (1, 1, SUBJECT)
    looked_up = await call(
        SchemaRegistryClient({"url": url}).lookup_schema, SUBJECT, Schema(SCHEMA_TEXT, "AVRO")
    )
    assert (looked_up.schema_id, looked_up.version) == (1, 1)


async def test_backward_compatibility_lets_a_field_with_a_default_in_and_keeps_one_without_out(
    registry,
):
    _, url = registry
    client = SchemaRegistryClient({"url": url})
    await call(client.register_schema, SUBJECT, Schema(SCHEMA_TEXT, "AVRO"))
    assert await call(client.set_compatibility, SUBJECT, "BACKWARD") == {
        "compatibility": "BACKWARD"
    }
    assert await call(client.get_compatibility, SUBJECT) == "BACKWARD"

    with_default = Schema(with_field({"name": "shadow", "type": "boolean", "default": False}))
    without = Schema(with_field({"name": "shadow", "type": "boolean"}))
    assert await call(client.test_compatibility, SUBJECT, with_default) is True
    assert await call(client.test_compatibility, SUBJECT, without) is False

    with pytest.raises(SchemaRegistryError) as refused:
        await call(client.register_schema, SUBJECT, without)
    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert "shadow" in refused.value.error_message

    assert await call(client.register_schema, SUBJECT, with_default) == 2
    assert await call(client.get_versions, SUBJECT) == [1, 2]


async def test_errors_come_in_confluents_shape(registry):
    standin, url = registry
    client = SchemaRegistryClient({"url": url})
    expected = [
        (lambda: client.get_schema(42), 404, 40403),
        (lambda: client.get_versions("nobody-value"), 404, 40401),
        (lambda: client.get_compatibility("nobody-value"), 404, 40408),
        (lambda: client.register_schema(SUBJECT, Schema('{"type": "nope"}', "AVRO")), 422, 42201),
        (lambda: client.set_compatibility(SUBJECT, "SIDEWAYS"), 422, 42203),
    ]
    for fn, status, code in expected:
        with pytest.raises(SchemaRegistryError) as failed:
            await call(fn)
        assert (failed.value.http_status_code, failed.value.error_code) == (status, code)
    await call(client.register_schema, SUBJECT, Schema(SCHEMA_TEXT, "AVRO"))
    with pytest.raises(SchemaRegistryError) as failed:
        await call(client.get_version, SUBJECT, 9)
    assert failed.value.error_code == 40402

    async with aiohttp.ClientSession() as http, http.get(f"{url}/schemas/ids/42") as response:
        assert response.status == 404
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert await response.json(content_type=None) == {
            "error_code": 40403,
            "message": "Schema not found",
        }
    assert standin.seen[0].method == "GET"


async def test_basic_auth_is_asked_when_users_are_given():
    standin = SchemaRegistryStandIn(users={"logger": "s3cret"})
    async with running_registry(standin) as (_, url):
        for user_info in (None, "logger:wrong", "nobody:s3cret"):
            conf = {"url": url} | ({"basic.auth.user.info": user_info} if user_info else {})
            with pytest.raises(SchemaRegistryError) as refused:
                await call(SchemaRegistryClient(conf).get_subjects)
            assert (refused.value.http_status_code, refused.value.error_code) == (401, 401)
        client = SchemaRegistryClient({"url": url, "basic.auth.user.info": "logger:s3cret"})
        assert await call(client.register_schema, SUBJECT, Schema(SCHEMA_TEXT, "AVRO")) == 1
    assert standin.seen[-1].user == "logger"
    assert "s3cret" not in repr(standin.seen)

    async with running_registry(SchemaRegistryStandIn(users={"logger": "s3cret"})) as (_, url):
        token = base64.b64encode(b"logger:s3cret").decode()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/subjects", headers={"Authorization": f"Basic {token}"}) as response,
        ):
            assert response.status == 200
            assert await response.json(content_type=None) == []


async def test_the_serializers_of_data_teams_carry_our_records_both_ways(registry):
    _, url = registry
    client = SchemaRegistryClient({"url": url})
    context = SerializationContext(TOPIC, MessageField.VALUE)
    serializer = AvroSerializer(client, SCHEMA_TEXT)
    value = await call(serializer, RECORD.to_avro(), context)
    schema_id = await call(client.get_latest_version, SUBJECT)
    # Confluent's framing of our own writer, byte for byte, and ours reads theirs.
    assert value == encode_record(RECORD, confluent_schema_id=schema_id.schema_id)
    assert decode_record(value, confluent=True) == RECORD

    # The deserializer data teams run, with no schema of its own: it fetches it by the id in the
    # value, here of the sidecar's encoder.
    framed = InferenceLogEncoder(RECORD.model_id, RECORD.model_name, schema_id.schema_id).encode(
        RECORD.model_version,
        RECORD.request_timestamp,
        RECORD.response_http_code,
        RECORD.inference_request.encode(),
        RECORD.inference_response.encode(),
    )
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    assert await call(deserializer, framed, context) == RECORD.to_avro()

    # Apache avro reads the body after the 5-byte header with the seed's schema JSON.
    reader = avro.io.DatumReader(avro.schema.parse(SCHEMA_TEXT))
    assert reader.read(avro.io.BinaryDecoder(io.BytesIO(framed[5:]))) == RECORD.to_avro()


@pytest.mark.parametrize(
    ("writer", "reader", "readable"),
    [
        (SCHEMA_TEXT, SCHEMA_TEXT, True),
        (SCHEMA_TEXT, with_field({"name": "shadow", "type": "boolean", "default": False}), True),
        (SCHEMA_TEXT, with_field({"name": "shadow", "type": "boolean"}), False),
        # A field the reader no longer has is skipped.
        (with_field({"name": "shadow", "type": "boolean"}), SCHEMA_TEXT, True),
        (
            SCHEMA_TEXT,
            with_field({"name": "tag", "type": ["null", "string"], "default": None}),
            True,
        ),
        # int promotes to long; long does not narrow to int.
        (
            SCHEMA_TEXT,
            SCHEMA_TEXT.replace('"modelId", "type": "int"', '"modelId", "type": "long"'),
            True,
        ),
        (
            SCHEMA_TEXT.replace('"modelId", "type": "int"', '"modelId", "type": "long"'),
            SCHEMA_TEXT,
            False,
        ),
        (
            SCHEMA_TEXT,
            SCHEMA_TEXT.replace(
                '"modelName", "type": "string"', '"modelName", "type": ["null", "string"]'
            ),
            True,
        ),
        (
            SCHEMA_TEXT.replace(
                '"modelName", "type": "string"', '"modelName", "type": ["null", "string"]'
            ),
            SCHEMA_TEXT,
            False,
        ),
        (SCHEMA_TEXT, SCHEMA_TEXT.replace('"inferencelog"', '"other"'), False),
    ],
)
def test_the_compatibility_check_follows_avros_schema_resolution(writer, reader, readable):
    assert (reading_problems(writer, reader) == []) is readable
