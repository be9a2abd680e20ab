"""The framing of the inference log's values when the serving has a schema registry: Confluent's
wire format (magic byte 0, the schema id in four bytes, then the Avro body), with the id the
registry has for the `inferencelog` schema under the topic's subject.

The operator registers the schema; the sidecar only looks its id up (`POST /subjects/{subject}`,
which registers nothing: the pod's credentials may be read-only), once, at start, and again
with a backoff until the registry answers. Until then the writer frames records with id 0
(`PENDING`: no registry gives it) and the sender holds them in the spool; once the id is known
the writer frames with it, and the sender puts it in place of 0 in what waited. So predictions
are answered while the registry is away, and no record reaches Kafka without its id. Why the
id is not known (the registry unreachable, refusing the credentials, the schema not registered
yet) is the log status's state, with the registry's words (`problem`).

A record spooled with id 0 is framed at its send with the id of the schema this sidecar writes;
a later sidecar that writes another schema must frame the records an earlier one left pending
with that one's id (one schema today: the seed's).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from modelserving.inferencelog.record import SCHEMA, confluent_prefix
from modelserving.inferencelog.schema_registry import (
    REGISTRY_CREDENTIALS_MISSING,
    REGISTRY_FAILED,
    RegistryProblem,
    SchemaRegistry,
    ask,
    lookup_request,
    registered_id,
)
from modelserving_sidecar.config import SchemaRegistryConfig

log = logging.getLogger(__name__)

PENDING_SCHEMA_ID = 0
PENDING = confluent_prefix(PENDING_SCHEMA_ID)
# Seconds between lookups while the registry does not give the id: soon at first (the operator
# registers as the serving's pods start), then at most every 10 s.
_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


def reframed(value: bytes, prefix: bytes) -> bytes:
    """The value with its pending framing replaced by `prefix` (the known id's); a value framed
    already is returned as it is."""
    if value.startswith(PENDING):
        return prefix + value[len(PENDING) :]
    return value


class RegistryFraming:
    """The schema id of one serving's records, as its registry gives it (see the module)."""

    def __init__(self, settings: SchemaRegistryConfig) -> None:
        self.settings = settings
        self.schema_id: int | None = None
        self.prefix: bytes | None = None  # the framing of the known id
        self.known = asyncio.Event()
        # Why the id is not known yet; None once it is, or before the first answer.
        self.problem: RegistryProblem | None = None

    def registry(self) -> SchemaRegistry | RegistryProblem:
        """The registry with its CA and credentials as the mounted files hold them now."""
        settings = self.settings
        values: dict[str, str] = {}
        for name, path in (
            ("ca_pem", settings.ca_file),
            ("username", settings.username_file),
            ("password", settings.password_file),
        ):
            if not path:
                continue
            try:
                text = Path(path).read_text()
            except OSError as exc:
                return RegistryProblem(
                    REGISTRY_CREDENTIALS_MISSING,
                    f"the schema registry's {name.replace('_pem', '')} file {path} cannot be "
                    f"read: {exc.strerror}",
                )
            values[name] = text if name == "ca_pem" else text.strip()
        return SchemaRegistry(settings.url, **values)

    async def lookup(self) -> int | RegistryProblem:
        """The id of the schema under the subject, or why the registry does not give it."""
        registry = self.registry()
        if isinstance(registry, RegistryProblem):
            return registry
        subject = self.settings.subject
        answered = await ask(
            registry,
            ((lookup_request(subject, SCHEMA), f"looking the schema up under {subject}"),),
        )
        if isinstance(answered, RegistryProblem):
            return answered
        schema_id = registered_id(*answered)
        if schema_id is None:
            return RegistryProblem(
                REGISTRY_FAILED,
                f"the schema registry at {registry.shown_url} answered the lookup under "
                f"{subject} with no schema id",
            )
        return schema_id

    async def run(self) -> None:
        """Look the id up until the registry gives it; say each new reason it does not, once."""
        attempt = 0
        while self.schema_id is None:
            found = await self.lookup()
            if isinstance(found, int):
                self._found(found)
                return
            if self.problem is None or found.reason != self.problem.reason:
                log.error(
                    "inference log: no schema id yet (%s): %s; records wait in the spool",
                    found.reason,
                    found.message,
                )
            self.problem = found
            await asyncio.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
            attempt += 1

    def _found(self, schema_id: int) -> None:
        self.schema_id = schema_id
        self.prefix = confluent_prefix(schema_id)
        self.problem = None
        self.known.set()
        log.info(
            "inference log: records are framed with schema id %d (subject %s at %s)",
            schema_id,
            self.settings.subject,
            self.settings.url,
        )
