"""A schema registry as the inference log speaks to it: Confluent Schema Registry's documented
REST API (https://docs.confluent.io/platform/current/schema-registry/develop/api.html), which
Apicurio (its `ccompat` API), Karapace and Redpanda speak too. The registry's URL may carry a
path (an Apicurio ccompat URL does), and every request goes below it.

Pure functions build each request (method, path, headers, JSON body) and read each answer;
`send` is the one edge that sends one, with aiohttp, over TLS with the given CA, with HTTP basic
auth when credentials are given. The operator registers the `inferencelog` schema under the
topic's subject (`register_request`, after `compatibility_request`); the sidecar looks its id up
(`lookup_request`) to frame records in Confluent's wire format (`confluent_prefix`); a reader
fetches a writer's schema by the id a record carries (`schema_by_id_request`).

Every failure is a `RegistryProblem` (a reason, CamelCase as conditions have them, and a message
naming the registry's URL and what it answered): unreachable, a TLS failure, credentials refused
(401) or not allowed (403), a subject or schema not there (404), a schema already there that
ours is not compatible with (409), a schema or level refused as invalid (422), or another
answer. No password is ever in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

# Confluent's content types: v1 of the API in JSON (the reference's "Content Types"); a request
# says it accepts the versioned type first, then the unversioned and plain JSON, as the
# reference's examples do.
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"
)

# A consumer reading with a newer schema reads every older record: the level that lets us add
# a field with a default later, and the registry's own default.
COMPATIBILITY = "BACKWARD"
TIMEOUT_SECONDS = 10.0

# The reasons of the registry's failures.
REGISTRY_UNREACHABLE = "SchemaRegistryUnreachable"
REGISTRY_TLS_FAILED = "SchemaRegistryTLSFailed"
REGISTRY_AUTHENTICATION_FAILED = "SchemaRegistryAuthenticationFailed"  # 401
REGISTRY_FORBIDDEN = "SchemaRegistryForbidden"  # 403
SCHEMA_INCOMPATIBLE = "SchemaIncompatible"  # 409: the subject holds a schema ours cannot follow
SCHEMA_INVALID = "SchemaInvalid"  # 422
SCHEMA_NOT_REGISTERED = "SchemaNotRegistered"  # 404: not (yet) under the subject
REGISTRY_FAILED = "SchemaRegistryFailed"  # any other answer
# A Secret or ConfigMap the spec names for the registry, or an entry of it, is not there.
REGISTRY_CREDENTIALS_MISSING = "SchemaRegistryCredentialsMissing"
REGISTRY_REASONS = (
    REGISTRY_UNREACHABLE,
    REGISTRY_TLS_FAILED,
    REGISTRY_AUTHENTICATION_FAILED,
    REGISTRY_FORBIDDEN,
    SCHEMA_INCOMPATIBLE,
    SCHEMA_INVALID,
    SCHEMA_NOT_REGISTERED,
    REGISTRY_FAILED,
    REGISTRY_CREDENTIALS_MISSING,
)


def subject_of(topic: str) -> str:
    """The subject of the topic's record values under TopicNameStrategy, the serializers' and
    deserializers' default: what a consumer of the topic looks the schema up by."""
    return f"{topic}-value"


@dataclass(frozen=True, repr=False)
class SchemaRegistry:
    """Where the registry is and how to speak to it: its URL, the CA its certificate is checked
    with (PEM; None: the system's), and basic-auth credentials (None: none)."""

    url: str
    ca_pem: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        # No password, whether given as one or written into the URL.
        return f"SchemaRegistry({self.shown_url!r}, username={self.username!r})"

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: without any user or password written into it."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class RegistryRequest:
    """One request of the API: its method, its path below the registry's URL, and its body."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Registered:
    """The schema is in the registry under the subject: its id, for the sidecar's framing."""

    subject: str
    schema_id: int


@dataclass(frozen=True)
class RegistryProblem:
    """Why the schema is not registered: LoggingReady's reason and a message for the user."""

    reason: str
    message: str


def register_request(subject: str, schema: Mapping[str, Any]) -> RegistryRequest:
    """POST /subjects/{subject}/versions: the schema, as a JSON string in `schema` (an Avro
    schema needs no `schemaType`: AVRO is the default)."""
    return RegistryRequest(
        "POST", f"/subjects/{_segment(subject)}/versions", {"schema": _json(schema)}
    )


def compatibility_request(subject: str, level: str = COMPATIBILITY) -> RegistryRequest:
    """PUT /config/{subject}: the subject's compatibility level."""
    return RegistryRequest("PUT", f"/config/{_segment(subject)}", {"compatibility": level})


def lookup_request(subject: str, schema: Mapping[str, Any]) -> RegistryRequest:
    """POST /subjects/{subject}: whether the schema is registered under the subject (its id),
    registering nothing: what a producer that may only read the registry asks."""
    return RegistryRequest("POST", f"/subjects/{_segment(subject)}", {"schema": _json(schema)})


def schema_by_id_request(schema_id: int) -> RegistryRequest:
    """GET /schemas/ids/{id}: the schema a record's id names, as a reader fetches it."""
    return RegistryRequest("GET", f"/schemas/ids/{schema_id}")


def headers(registry: SchemaRegistry, request: RegistryRequest) -> dict[str, str]:
    """The headers of a request: the content types, and basic auth when credentials are given."""
    out = {"Accept": ACCEPT}
    if request.body is not None:
        out["Content-Type"] = CONTENT_TYPE
    if registry.username is not None:
        pair = f"{registry.username}:{registry.password or ''}".encode()
        out["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return out


def body_of(request: RegistryRequest) -> bytes | None:
    return None if request.body is None else json.dumps(request.body).encode()


def url_of(registry: SchemaRegistry, request: RegistryRequest) -> str:
    return registry.url.rstrip("/") + request.path


def registered_id(status: int, answer: Any) -> int | None:
    """The id in a register or lookup request's answer (`{"id": 1}`), None when it has
    none."""
    if status == 200 and isinstance(answer, Mapping):
        schema_id = answer.get("id")
        if isinstance(schema_id, int) and not isinstance(schema_id, bool):
            return schema_id
    return None


def schema_of(status: int, answer: Any) -> dict[str, Any] | None:
    """The schema in a by-id request's answer (`{"schema": "<JSON text>"}`), None when it has
    none or it is not an Avro schema's JSON."""
    if status != 200 or not isinstance(answer, Mapping):
        return None
    if answer.get("schemaType", "AVRO") != "AVRO" or not isinstance(answer.get("schema"), str):
        return None
    try:
        schema = json.loads(answer["schema"])
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


# The most of a registry's own words a problem quotes: a registry (or whatever answers at its
# URL) may say a megabyte, and a pod's annotations hold 256 KiB in all.
MAX_MESSAGE = 500


def problem_of(registry: SchemaRegistry, what: str, status: int, answer: Any) -> RegistryProblem:
    """A refusal in Confluent's error shape (`{"error_code": 40401, "message": "..."}`) as a
    LoggingReady reason and message; `what` says what was asked (registering the schema under
    a subject, setting its compatibility)."""
    said = ""
    if isinstance(answer, Mapping) and "message" in answer:
        code = answer.get("error_code")
        message = str(answer["message"])
        if len(message) > MAX_MESSAGE:  # it goes into a condition and a pod's annotation
            message = message[:MAX_MESSAGE] + "…"
        said = f": {message}" + (f" (error code {code})" if code is not None else "")
    at = f"the schema registry at {registry.shown_url}"
    if status == 401:
        user = f"user {registry.username!r}" if registry.username else "no credentials"
        return RegistryProblem(
            REGISTRY_AUTHENTICATION_FAILED,
            f"{at} refused the credentials ({user}) {what}{said}",
        )
    if status == 403:
        return RegistryProblem(
            REGISTRY_FORBIDDEN,
            f"{at} does not allow user {registry.username!r} {what}{said}",
        )
    if status == 404:
        return RegistryProblem(SCHEMA_NOT_REGISTERED, f"{at} has no answer to {what}{said}")
    if status == 409:
        return RegistryProblem(
            SCHEMA_INCOMPATIBLE,
            f"{at} refused {what}: the subject holds a schema the inferencelog schema is not "
            f"{COMPATIBILITY} compatible with{said}",
        )
    if status == 422:
        return RegistryProblem(SCHEMA_INVALID, f"{at} refused {what} as invalid{said}")
    return RegistryProblem(REGISTRY_FAILED, f"{at} answered HTTP {status} {what}{said}")


def ssl_context_of(registry: SchemaRegistry) -> ssl.SSLContext | None:
    """The TLS context of an https registry, trusting its CA when one is given."""
    if urlsplit(registry.url).scheme != "https":
        return None
    return ssl.create_default_context(cadata=registry.ca_pem or None)


async def ask(
    registry: SchemaRegistry,
    steps: Sequence[tuple[RegistryRequest, str]],
    timeout: float = TIMEOUT_SECONDS,
) -> tuple[int, Any] | RegistryProblem:
    """Send each request in turn (with what it asks, in words), over one connection: the last
    answer's status and JSON body, or the first problem (a step answered with other than 200
    ends the steps)."""
    try:
        context = ssl_context_of(registry)
    except ssl.SSLError as exc:
        return RegistryProblem(
            REGISTRY_TLS_FAILED,
            f"the CA of the schema registry cannot be used: {exc.reason or exc}",
        )
    status, answer = 0, None
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        for request, what in steps:
            answered = await send(session, registry, request)
            if isinstance(answered, RegistryProblem):
                return answered
            status, answer = answered
            if status != 200:
                return problem_of(registry, what, status, answer)
    return status, answer


async def send(
    session: aiohttp.ClientSession, registry: SchemaRegistry, request: RegistryRequest
) -> tuple[int, Any] | RegistryProblem:
    """The answer's status and JSON body (None when it is not JSON), or why there is none."""
    at = f"the schema registry at {registry.shown_url}"
    try:
        async with session.request(
            request.method,
            url_of(registry, request),
            data=body_of(request),
            headers=headers(registry, request),
        ) as response:
            raw = await response.read()
    except aiohttp.ClientConnectorCertificateError as exc:
        return RegistryProblem(
            REGISTRY_TLS_FAILED,
            f"{at} presented a certificate that was refused: {exc.certificate_error} (is the CA "
            "the one that signed it, and does it name the address used?)",
        )
    except aiohttp.ClientSSLError as exc:
        return RegistryProblem(REGISTRY_TLS_FAILED, f"the TLS handshake with {at} failed: {exc}")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        cause = str(exc) or type(exc).__name__
        return RegistryProblem(REGISTRY_UNREACHABLE, f"{at} cannot be reached: {cause}")
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    return response.status, answer


def _segment(name: str) -> str:
    """A subject as one path segment (a subject may hold any character, '/' included)."""
    return quote(name, safe="")


def _json(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"))
