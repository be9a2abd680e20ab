"""Reading each Kafka value of the inference log, whichever framing it has: plain Avro of the
seed's schema (the sidecar's default), or Confluent's wire format, whose schema id names the
writer's schema in a schema registry. A reader fetches that schema by id once (`WriterSchemas`
keeps it per id) and reads the body into the seed's seven fields by Avro's schema resolution,
so a record written with a later schema (one that added a field with a default, as BACKWARD
compatibility allows) still reads. Without a registry, a framed body is read with the seed's
schema, the only one our sidecar writes.

    schemas = WriterSchemas(SchemaRegistry("https://registry:8081", username="reader", ...))
    record = await schemas.record_of(message.value)
"""

from __future__ import annotations

from typing import Any

import fastavro

from modelserving.inferencelog.record import (
    CONFLUENT_PREFIX_SIZE,
    InferenceLogDecodeError,
    InferenceLogRecord,
    decode_body,
    framed_schema_id,
)
from modelserving.inferencelog.schema_registry import (
    RegistryProblem,
    SchemaRegistry,
    ask,
    schema_by_id_request,
    schema_of,
)


class SchemaRegistryUnavailable(RuntimeError):
    """The schema registry did not give the schema a record's id names: it cannot be reached,
    refused the credentials, has no schema of that id, or answered with other than an Avro
    schema. The message names the registry's URL and never a password."""


class NeedsSchemaRegistry(InferenceLogDecodeError):
    """A framed value the seed's schema cannot read, read with no registry to fetch its own."""


class WriterSchemas:
    """The writers' schemas a read has met, by id, fetched from `registry` (None: no registry,
    framed bodies are read with the seed's schema). `framed_only`: a value without Confluent's
    framing is an error (what `--confluent` asks)."""

    def __init__(self, registry: SchemaRegistry | None = None, framed_only: bool = False) -> None:
        self.registry = registry
        self.framed_only = framed_only
        self._parsed: dict[int, Any] = {}

    async def record_of(self, value: bytes) -> InferenceLogRecord:
        """The record in one Kafka value; InferenceLogDecodeError when it holds none,
        SchemaRegistryUnavailable when its writer's schema cannot be had."""
        schema_id = framed_schema_id(value)
        if schema_id is None:
            if self.framed_only:
                raise InferenceLogDecodeError("value has no Confluent schema-registry prefix")
            return decode_body(value)
        if self.registry is None:
            try:
                return decode_body(value, CONFLUENT_PREFIX_SIZE)
            except InferenceLogDecodeError as exc:
                raise NeedsSchemaRegistry(
                    f"{exc}: the value is framed with schema id {schema_id}, which the "
                    "inferencelog schema cannot read; give the schema registry that holds it "
                    "(--schema-registry URL)"
                ) from None
        writer = self._parsed.get(schema_id)
        if writer is None:
            writer = self._parsed[schema_id] = await self._fetch(self.registry, schema_id)
        try:
            return decode_body(value, CONFLUENT_PREFIX_SIZE, writer)
        except InferenceLogDecodeError as exc:
            raise InferenceLogDecodeError(f"{exc} (the value's schema id: {schema_id})") from None

    async def _fetch(self, registry: SchemaRegistry, schema_id: int) -> Any:
        what = f"the schema of id {schema_id}"
        answered = await ask(registry, [(schema_by_id_request(schema_id), f"fetching {what}")])
        if isinstance(answered, RegistryProblem):
            raise SchemaRegistryUnavailable(answered.message)
        schema = schema_of(*answered)
        if schema is None:
            raise SchemaRegistryUnavailable(
                f"the schema registry at {registry.shown_url} did not answer {what} with an "
                "Avro schema"
            )
        try:
            return fastavro.parse_schema(schema)
        except Exception as exc:  # fastavro raises several kinds for a schema it cannot parse
            raise SchemaRegistryUnavailable(
                f"the schema registry at {registry.shown_url} answered {what} with a schema "
                f"that does not parse: {exc}"
            ) from None
