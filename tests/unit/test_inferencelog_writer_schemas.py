"""Reading both framings of the inference log (modelserving/inferencelog/writer_schemas.py) and the
registry flags of its readers (registry_flags.py): a plain record and a framed one each read as
their first byte says; a framed record's writer's schema fetched by id from the registry (the
stand-in, tests/support/schema_registry_standin.py) once per id; and the issue's promise that an
old consumer reads a new record: one written with a later schema, registered under the same
subject with BACKWARD compatibility, reads into the seed's seven fields by our reader and by
`confluent-kafka`'s `AvroDeserializer` given the seed's schema as its reader schema."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from modelserving.inferencelog.record import (
    SCHEMA,
    InferenceLogDecodeError,
    InferenceLogRecord,
    encode_record,
)
from modelserving.inferencelog.registry_flags import (
    PASSWORD_ENV,
    SchemaRegistryFlagError,
    add_arguments,
    schema_registry_of,
)
from modelserving.inferencelog.schema_registry import SchemaRegistry
from modelserving.inferencelog.writer_schemas import (
    NeedsSchemaRegistry,
    SchemaRegistryUnavailable,
    WriterSchemas,
)
from tests.support.schema_registry_standin import SchemaRegistryStandIn, running_registry

TOPIC = "demo.fraud-inference"
SUBJECT = f"{TOPIC}-value"
SEED_TEXT = json.dumps(SCHEMA)
RECORD = InferenceLogRecord(7, "fraud", 2, 1_700_000_000_123, 200, '{"x":[1]}', '{"y":[2.5]}')
# A later schema: the seed's seven fields and one appended with a default, a BACKWARD change.
NEW_FIELD = {"name": "region", "type": "string", "default": "eu-west-1"}
NEW_SCHEMA = {**SCHEMA, "fields": [*SCHEMA["fields"], NEW_FIELD]}
# The same field without a default: a reader with it cannot read the records written before.
BREAKING_SCHEMA = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "region", "type": "string"}]}
PASSWORD = "s3cret-registry-pw"


def framed(schema: dict[str, Any], schema_id: int, record: dict[str, Any]) -> bytes:
    """A value as a Confluent serializer writes it with `schema`: magic byte 0, the id, Avro."""
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def new_record(region: str = "us-east-2") -> dict[str, Any]:
    return {**RECORD.to_avro(), "region": region}


def get_schema_requests(standin: SchemaRegistryStandIn) -> list[str]:
    return [seen.path for seen in standin.seen if seen.path.startswith("/schemas/ids/")]


@pytest.fixture
async def registry() -> AsyncIterator[tuple[SchemaRegistryStandIn, str]]:
    async with running_registry() as running:
        yield running


async def test_an_old_consumer_reads_a_record_written_with_a_later_backward_compatible_schema(
    registry,
):
    standin, url = registry
    # Given the seed's schema under the topic's subject, with BACKWARD compatibility, as the
    # operator registers it
    client = SchemaRegistryClient({"url": url})
    seed_id = await asyncio.to_thread(client.register_schema, SUBJECT, Schema(SEED_TEXT, "AVRO"))
    await asyncio.to_thread(client.set_compatibility, SUBJECT, "BACKWARD")

    # When a later schema appends a field without a default, the registry refuses it as
    # incompatible (a reader with it could not read the records written before)
    with pytest.raises(SchemaRegistryError) as refused:
        await asyncio.to_thread(
            client.register_schema, SUBJECT, Schema(json.dumps(BREAKING_SCHEMA), "AVRO")
        )
    assert refused.value.http_status_code == 409
    # ...and takes the same field with a default
    new_id = await asyncio.to_thread(
        client.register_schema, SUBJECT, Schema(json.dumps(NEW_SCHEMA), "AVRO")
    )
    assert new_id != seed_id
    assert await asyncio.to_thread(client.get_versions, SUBJECT) == [1, 2]

    value = framed(NEW_SCHEMA, new_id, new_record())

    # Then our reader, given the registry, reads the new record into the seed's seven fields
    assert await WriterSchemas(SchemaRegistry(url)).record_of(value) == RECORD
    # ...and so does confluent-kafka's deserializer, the old consumer, with the seed's schema as
    # its reader schema
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}), SEED_TEXT)
    context = SerializationContext(TOPIC, MessageField.VALUE)
    assert await asyncio.to_thread(deserializer, value, context) == RECORD.to_avro()
    assert get_schema_requests(standin).count(f"/schemas/ids/{new_id}") == 2  # one each

    # And without the registry the seed's schema cannot read it, and says what to give
    with pytest.raises(NeedsSchemaRegistry, match=r"schema id 2.*--schema-registry URL"):
        await WriterSchemas().record_of(value)


async def test_the_first_byte_tells_the_framing_and_each_schema_is_fetched_once(registry):
    standin, url = registry
    new_id = await standin_register(url, NEW_SCHEMA)
    seed_id = await standin_register(url, SCHEMA, "other-value")
    schemas = WriterSchemas(SchemaRegistry(url))
    values = [
        encode_record(RECORD),  # plain Avro, as the sidecar writes without a registry
        framed(NEW_SCHEMA, new_id, new_record("a")),
        encode_record(RECORD, confluent_schema_id=seed_id),
        framed(NEW_SCHEMA, new_id, new_record("b")),
        encode_record(RECORD),
        framed(NEW_SCHEMA, new_id, new_record("c")),
    ]
    assert [await schemas.record_of(v) for v in values] == [RECORD] * len(values)
    assert sorted(get_schema_requests(standin)) == sorted(
        [f"/schemas/ids/{new_id}", f"/schemas/ids/{seed_id}"]
    )


async def test_without_a_registry_plain_and_seed_framed_records_read_and_nothing_is_asked(
    registry,
):
    standin, _ = registry
    schemas = WriterSchemas()
    assert await schemas.record_of(encode_record(RECORD)) == RECORD
    assert await schemas.record_of(encode_record(RECORD, confluent_schema_id=42)) == RECORD
    with pytest.raises(InferenceLogDecodeError, match="too short"):
        await schemas.record_of(b"\x00\x00\x01")
    assert standin.seen == []


async def test_framed_only_refuses_a_plain_value():
    """What the deprecated `--confluent` still says: every value must be framed."""
    schemas = WriterSchemas(framed_only=True)
    assert await schemas.record_of(encode_record(RECORD, confluent_schema_id=3)) == RECORD
    with pytest.raises(InferenceLogDecodeError, match="no Confluent schema-registry prefix"):
        await schemas.record_of(encode_record(RECORD))


async def test_a_schema_the_seeds_fields_cannot_be_read_from_is_a_decode_error(registry):
    _, url = registry
    other = {"type": "record", "name": "inferencelog", "fields": [{"name": "x", "type": "int"}]}
    other_id = await standin_register(url, other, "other-value")
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, other_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(other), {"x": 1})
    with pytest.raises(InferenceLogDecodeError, match=f"cannot be read.*schema id: {other_id}"):
        await WriterSchemas(SchemaRegistry(url)).record_of(out.getvalue())


async def test_a_registry_that_cannot_be_reached_or_refuses_is_named_without_the_password():
    standin = SchemaRegistryStandIn(users={"reader": PASSWORD})
    value = encode_record(RECORD, confluent_schema_id=1)
    async with running_registry(standin) as (_, url):
        await standin_register(url, SCHEMA, SUBJECT, user_info=f"reader:{PASSWORD}")
        wrong = SchemaRegistry(url, username="reader", password="not-it")
        with pytest.raises(SchemaRegistryUnavailable) as refused:
            await WriterSchemas(wrong).record_of(value)
        unknown = encode_record(RECORD, confluent_schema_id=99)
        right = SchemaRegistry(url, username="reader", password=PASSWORD)
        with pytest.raises(SchemaRegistryUnavailable) as missing:
            await WriterSchemas(right).record_of(unknown)
        assert await WriterSchemas(right).record_of(value) == RECORD
    with pytest.raises(SchemaRegistryUnavailable) as unreachable:
        await WriterSchemas(right).record_of(value)

    assert f"the schema registry at {url} refused the credentials (user 'reader')" in str(
        refused.value
    )
    assert f"the schema registry at {url} has no answer to fetching the schema of id 99" in str(
        missing.value
    )
    assert f"the schema registry at {url} cannot be reached" in str(unreachable.value)
    for said in (refused.value, missing.value, unreachable.value):
        assert PASSWORD not in str(said) and "not-it" not in str(said)


async def standin_register(
    url: str, schema: dict[str, Any], subject: str = SUBJECT, user_info: str | None = None
) -> int:
    conf = {"url": url} | ({"basic.auth.user.info": user_info} if user_info else {})
    client = SchemaRegistryClient(conf)
    return await asyncio.to_thread(client.register_schema, subject, Schema(json.dumps(schema)))


# ---- the flags: a password from a file or the environment, never the command line ----


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_no_flags_no_registry():
    assert schema_registry_of(parsed(), environ={}) is None


def test_the_password_comes_from_a_file_or_the_environment(tmp_path: Path):
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "password").write_text(PASSWORD + "\n")
    args = parsed(
        "--schema-registry",
        "https://registry:8081/apis/ccompat/v7",
        "--schema-registry-ca",
        str(tmp_path / "ca.crt"),
        "--schema-registry-user",
        "reader",
        "--schema-registry-password-file",
        str(tmp_path / "password"),
    )
    registry = schema_registry_of(args, environ={PASSWORD_ENV: "ignored: the file wins"})
    assert registry == SchemaRegistry(
        "https://registry:8081/apis/ccompat/v7",
        "-----BEGIN CERTIFICATE-----\n",
        "reader",
        PASSWORD,
    )
    assert PASSWORD not in repr(registry)
    from_env = parsed("--schema-registry", "http://r:8081", "--schema-registry-user", "reader")
    assert schema_registry_of(from_env, environ={PASSWORD_ENV: PASSWORD}).password == PASSWORD


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--schema-registry-user", "reader"), "--schema-registry-user is given without"),
        (("--schema-registry", "registry:8081"), "http(s)://host:port"),
        (
            ("--schema-registry", f"https://reader:{PASSWORD}@registry:8081"),
            "--schema-registry https://registry:8081: give the user with --schema-registry-user",
        ),
        (("--schema-registry", "http://r", "--schema-registry-ca", "/nowhere/ca"), "/nowhere/ca"),
    ],
)
def test_flags_that_cannot_work_say_what_to_give(argv, words):
    with pytest.raises(SchemaRegistryFlagError) as refused:
        schema_registry_of(parsed(*argv), environ={})
    assert words in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_a_password_without_a_user_is_refused():
    with pytest.raises(SchemaRegistryFlagError, match="without --schema-registry-user"):
        schema_registry_of(parsed("--schema-registry", "http://r"), environ={PASSWORD_ENV: "pw"})
