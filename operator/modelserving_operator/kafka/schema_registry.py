"""The inference log's schema in a schema registry: the `inferencelog` schema registered under
its topic's subject (`<topic>-value`, Confluent's TopicNameStrategy, what consumers look up),
that subject's compatibility set to BACKWARD, and the schema id the sidecar frames records with.

Written against Confluent Schema Registry's documented REST API
(https://docs.confluent.io/platform/current/schema-registry/develop/api.html), which Apicurio
(its `ccompat` API), Karapace and Redpanda speak too: the registry's URL may carry a path (an
Apicurio ccompat URL does), and every request goes below it. Pure functions build each request
(method, path, headers, JSON body) and read each answer; `register_schema` is the one edge that
sends them, with aiohttp, over TLS with the given CA, with HTTP basic auth when credentials are
given. `registry_of` reads the CA and credentials spec.logging.kafka.schemaRegistry names from
their Secret or ConfigMap through the API; `what_to_check` says which of them to look at when
the registry refuses.

Every failure is a `RegistryProblem` (a LoggingReady reason and a message naming the registry's
URL and what it answered): unreachable, a TLS failure, credentials refused (401) or not allowed
(403), a schema already there that ours is not compatible with (409), a schema or level refused
as invalid (422), or another answer. No password is ever in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from modelserving_operator.kafka.security import SecretReader
from modelserving_operator.spec import REGISTRY_FIELD, SchemaRegistrySpec
from modelserving_operator.status.conditions import LoggingState

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

# LoggingReady's reasons of the registry.
REGISTRY_UNREACHABLE = "SchemaRegistryUnreachable"
REGISTRY_TLS_FAILED = "SchemaRegistryTLSFailed"
REGISTRY_AUTHENTICATION_FAILED = "SchemaRegistryAuthenticationFailed"  # 401
REGISTRY_FORBIDDEN = "SchemaRegistryForbidden"  # 403
SCHEMA_INCOMPATIBLE = "SchemaIncompatible"  # 409: the subject holds a schema ours cannot follow
SCHEMA_INVALID = "SchemaInvalid"  # 422
REGISTRY_FAILED = "SchemaRegistryFailed"  # any other answer
# A Secret or ConfigMap the spec names for the registry, or an entry of it, is not there.
REGISTRY_CREDENTIALS_MISSING = "SchemaRegistryCredentialsMissing"


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

    def state(self) -> LoggingState:
        return LoggingState(False, self.reason, self.message)


def register_request(subject: str, schema: Mapping[str, Any]) -> RegistryRequest:
    """POST /subjects/{subject}/versions: the schema, as a JSON string in `schema` (an Avro
    schema needs no `schemaType`: AVRO is the default)."""
    return RegistryRequest(
        "POST", f"/subjects/{_segment(subject)}/versions", {"schema": _json(schema)}
    )


def compatibility_request(subject: str, level: str = COMPATIBILITY) -> RegistryRequest:
    """PUT /config/{subject}: the subject's compatibility level."""
    return RegistryRequest("PUT", f"/config/{_segment(subject)}", {"compatibility": level})


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
    """The id in a register request's answer (`{"id": 1}`), None when it has none."""
    if status == 200 and isinstance(answer, Mapping):
        schema_id = answer.get("id")
        if isinstance(schema_id, int) and not isinstance(schema_id, bool):
            return schema_id
    return None


def problem_of(registry: SchemaRegistry, what: str, status: int, answer: Any) -> RegistryProblem:
    """A refusal in Confluent's error shape (`{"error_code": 40401, "message": "..."}`) as a
    LoggingReady reason and message; `what` says what was asked (registering the schema under
    a subject, setting its compatibility)."""
    said = ""
    if isinstance(answer, Mapping) and "message" in answer:
        code = answer.get("error_code")
        said = f": {answer['message']}" + (f" (error code {code})" if code is not None else "")
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


async def registry_of(
    kube: SecretReader, namespace: str, spec: SchemaRegistrySpec
) -> SchemaRegistry | RegistryProblem:
    """How to speak to the registry the spec names, with its CA and credentials read through
    the API (held in memory only), or which Secret, ConfigMap or entry is missing."""
    values: dict[str, str] = {}

    async def entry(kind: str, name: str, key: str, field: str) -> str | RegistryProblem:
        obj = await kube.get(kind, name, namespace)
        where = f"the {kind} {namespace}/{name} named in {REGISTRY_FIELD}.{field}"
        if obj is None:
            return RegistryProblem(REGISTRY_CREDENTIALS_MISSING, f"{where} is missing")
        data = obj.get("data") or {}
        if key not in data:
            return RegistryProblem(REGISTRY_CREDENTIALS_MISSING, f"{where} has no entry {key}")
        return base64.b64decode(data[key]).decode() if kind == "Secret" else str(data[key])

    wanted: list[tuple[str, str, str, str, str]] = []  # value, kind, name, key, field
    if spec.ca is not None:
        kind, name = (
            ("Secret", spec.ca.secret_name)
            if spec.ca.secret_name
            else ("ConfigMap", spec.ca.config_map_name or "")
        )
        wanted.append(("ca_pem", kind, name, spec.ca.key, "ca"))
    if spec.credentials is not None:
        secret = spec.credentials.secret_name
        wanted.append(("username", "Secret", secret, spec.credentials.username_key, "credentials"))
        wanted.append(("password", "Secret", secret, spec.credentials.password_key, "credentials"))
    for value, kind, name, key, field in wanted:
        found = await entry(kind, name, key, field)
        if isinstance(found, RegistryProblem):
            return found
        # A user name or password written with a trailing newline (echo > file) means without.
        values[value] = found if value == "ca_pem" else found.strip()
    return SchemaRegistry(spec.url, **values)


def what_to_check(reason: str, spec: SchemaRegistrySpec) -> str:
    """What a user fixes for a failure of this reason, in the words of the spec ("" when the
    message says it all)."""
    if reason == REGISTRY_AUTHENTICATION_FAILED:
        if spec.credentials is None:
            return f"the registry wants credentials: set {REGISTRY_FIELD}.credentials"
        creds = spec.credentials
        return (
            f"check the user name and password in Secret {creds.secret_name} (entries "
            f"{creds.username_key} and {creds.password_key}; {REGISTRY_FIELD}.credentials)"
        )
    if reason == REGISTRY_TLS_FAILED:
        if spec.ca is None:
            return (
                f"check the CA ({REGISTRY_FIELD}.ca is not set: the system's trusted CAs are used)"
            )
        source = (
            f"Secret {spec.ca.secret_name}"
            if spec.ca.secret_name
            else f"ConfigMap {spec.ca.config_map_name}"
        )
        return f"check the CA in {source} (entry {spec.ca.key}; {REGISTRY_FIELD}.ca)"
    return ""


async def register_schema(
    registry: SchemaRegistry,
    subject: str,
    schema: Mapping[str, Any],
    timeout: float = TIMEOUT_SECONDS,
) -> Registered | RegistryProblem:
    """Set the subject's compatibility to BACKWARD, then register the schema under it (the
    same schema again gets the same id): the id, or why not.

    The level is set first so that the registration is checked under it, whatever the
    registry's global default."""
    try:
        context = ssl_context_of(registry)
    except ssl.SSLError as exc:
        return RegistryProblem(
            REGISTRY_TLS_FAILED,
            f"the CA of the schema registry cannot be used: {exc.reason or exc}",
        )
    steps = (
        (compatibility_request(subject), f"setting the compatibility of {subject}"),
        (register_request(subject, schema), f"registering the schema under {subject}"),
    )
    status, answer = 0, None
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        for request, what in steps:
            answered = await _send(session, registry, request)
            if isinstance(answered, RegistryProblem):
                return answered
            status, answer = answered
            if status != 200:
                return problem_of(registry, what, status, answer)
        schema_id = registered_id(status, answer)
    if schema_id is None:
        return RegistryProblem(
            REGISTRY_FAILED,
            f"the schema registry at {registry.shown_url} answered the registration under "
            f"{subject} with no schema id",
        )
    return Registered(subject, schema_id)


async def _send(
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
