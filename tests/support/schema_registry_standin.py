"""A stand-in for Confluent Schema Registry's REST API, for tests: no schema registry server can be
had from the package registries here (Confluent's artifacts are not served, Karapace is not on
PyPI, Apicurio's Maven modules do not resolve), so this small aiohttp server answers the part of
the API that clients use, as Confluent's API reference documents it
(https://docs.confluent.io/platform/current/schema-registry/develop/api.html). The other side of
every test is a real client (`confluent-kafka`'s `SchemaRegistryClient`, the serializers data
teams run, and the operator's own client), so the stand-in is held to what those send and read.

It speaks, for Avro schemas only:
- POST /subjects/{subject}/versions: register (the same schema again: the same id and version;
  the same schema under another subject: the same id), checked against the subject's latest
  version under its compatibility level; POST /subjects/{subject}: look a schema up;
- GET /schemas/ids/{id}, GET /subjects, GET /subjects/{subject}/versions and
  /versions/{version} (a number or `latest`);
- GET and PUT /config and /config/{subject} (the compatibility level; BACKWARD by default, as
  Confluent's);
- POST /compatibility/subjects/{subject}/versions/{version} (`is_compatible`, with `messages`
  when `?verbose=true`);
- Confluent's error bodies (`{"error_code": 40401, "message": "Subject '...' not found."}` and the
  rest) and content type `application/vnd.schemaregistry.v1+json`; HTTP basic auth when users
  are given (401 with `error_code` 401 otherwise).

What it is not: no Kafka-backed store (all in memory, gone with the process), no JSON Schema or
Protobuf, no references, no contexts, no deletes, and its compatibility check is Avro's schema
resolution rules written out here (the levels NONE, BACKWARD, FORWARD and FULL against the
latest version, and their _TRANSITIVE forms against every version), not Confluent's code.

    python tests/support/schema_registry_standin.py --port 8081 [--user name:password]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import fastavro
from aiohttp import web

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
DEFAULT_COMPATIBILITY = "BACKWARD"
COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

# Confluent's error codes (the API reference's "Errors" of each resource).
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_COMPATIBILITY_NOT_CONFIGURED = 40408
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INVALID_COMPATIBILITY_LEVEL = 42203
INCOMPATIBLE_SCHEMA = 409
UNAUTHORIZED = 401

BODY = web.RequestKey("body", object)  # the request's parsed JSON, read once by the middleware


class RegistryError(Exception):
    """An answer in Confluent's error shape: HTTP status, error_code and message."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


@dataclass(frozen=True)
class SeenRequest:
    """A request as the stand-in saw it, for tests of what a client sends."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any  # the parsed JSON body, None when there was none
    user: str | None  # the basic-auth user name, never the password


@dataclass
class SchemaRegistryStandIn:
    """The registry's state (schemas by id, each subject's versions, compatibility levels) and
    its aiohttp application."""

    users: Mapping[str, str] = field(default_factory=dict)  # basic auth when not empty
    schemas: list[str] = field(default_factory=list)  # id - 1 -> the schema as registered
    subjects: dict[str, list[int]] = field(default_factory=dict)  # version - 1 -> schema id
    compatibility: dict[str, str] = field(default_factory=dict)  # subject -> level
    global_compatibility: str = DEFAULT_COMPATIBILITY
    seen: list[SeenRequest] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_and_auth])
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_post("/subjects/{subject}", self._lookup)
        app.router.add_get("/subjects", self._list_subjects)
        app.router.add_get("/subjects/{subject}/versions", self._list_versions)
        app.router.add_get("/subjects/{subject}/versions/{version}", self._get_version)
        app.router.add_get("/schemas/ids/{id}", self._get_schema)
        app.router.add_get("/config", self._get_global_config)
        app.router.add_put("/config", self._put_global_config)
        app.router.add_get("/config/{subject}", self._get_config)
        app.router.add_put("/config/{subject}", self._put_config)
        app.router.add_post(
            "/compatibility/subjects/{subject}/versions/{version}", self._check_compatibility
        )
        return app

    @web.middleware
    async def _errors_and_auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user = None
        try:
            user = self._authenticate(request)
            body = await _json_body(request)
            self.seen.append(
                SeenRequest(
                    request.method,
                    request.path,
                    dict(request.query),
                    request.content_type,
                    body,
                    user,
                )
            )
            request[BODY] = body
            response: web.StreamResponse = await handler(request)
            return response
        except RegistryError as exc:
            return _answer({"error_code": exc.error_code, "message": exc.message}, exc.status)
        except web.HTTPNotFound:
            return _answer({"error_code": 404, "message": "HTTP 404 Not Found"}, 404)
        except web.HTTPMethodNotAllowed:
            return _answer({"error_code": 405, "message": "HTTP 405 Method Not Allowed"}, 405)

    def _authenticate(self, request: web.Request) -> str | None:
        if not self.users:
            return None
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            name, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, password = "", ""
        if scheme.lower() != "basic" or self.users.get(name) != password:
            raise RegistryError(401, UNAUTHORIZED, "Unauthorized")
        return name

    # Subjects and schemas.

    async def _register(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        schema = _schema_of(request[BODY])
        versions = self.subjects.get(subject, [])
        for schema_id in versions:
            if _same(self.schemas[schema_id - 1], schema):
                return _answer({"id": schema_id})
        problems = self._problems(subject, schema, versions)
        if problems:
            raise RegistryError(
                409,
                INCOMPATIBLE_SCHEMA,
                f"Schema being registered is incompatible with an earlier schema for subject "
                f'"{subject}", details: {problems}',
            )
        schema_id = next(
            (i + 1 for i, known in enumerate(self.schemas) if _same(known, schema)), None
        )
        if schema_id is None:
            self.schemas.append(_compact(schema))
            schema_id = len(self.schemas)
        self.subjects.setdefault(subject, []).append(schema_id)
        return _answer({"id": schema_id})

    async def _lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        schema = _schema_of(request[BODY])
        versions = self._versions(subject)
        for number, schema_id in enumerate(versions, start=1):
            if _same(self.schemas[schema_id - 1], schema):
                return _answer(self._version_body(subject, number))
        raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")

    async def _list_subjects(self, request: web.Request) -> web.Response:
        return _answer(sorted(self.subjects))

    async def _list_versions(self, request: web.Request) -> web.Response:
        return _answer(list(range(1, len(self._versions(request.match_info["subject"])) + 1)))

    async def _get_version(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        return _answer(self._version_body(subject, self._version_number(request, subject)))

    async def _get_schema(self, request: web.Request) -> web.Response:
        try:
            schema_id = int(request.match_info["id"])
        except ValueError:
            schema_id = 0
        if not 1 <= schema_id <= len(self.schemas):
            raise RegistryError(404, SCHEMA_NOT_FOUND, "Schema not found")
        return _answer({"schema": self.schemas[schema_id - 1]})

    # Compatibility.

    async def _get_global_config(self, request: web.Request) -> web.Response:
        return _answer({"compatibilityLevel": self.global_compatibility})

    async def _put_global_config(self, request: web.Request) -> web.Response:
        self.global_compatibility = _level_of(request[BODY])
        return _answer({"compatibility": self.global_compatibility})

    async def _get_config(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        level = self.compatibility.get(subject)
        if level is None and request.query.get("defaultToGlobal") == "true":
            level = self.global_compatibility
        if level is None:
            raise RegistryError(
                404,
                SUBJECT_COMPATIBILITY_NOT_CONFIGURED,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return _answer({"compatibilityLevel": level})

    async def _put_config(self, request: web.Request) -> web.Response:
        level = _level_of(request[BODY])
        self.compatibility[request.match_info["subject"]] = level
        return _answer({"compatibility": level})

    async def _check_compatibility(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        schema = _schema_of(request[BODY])
        number = self._version_number(request, subject)
        versions = self._versions(subject)
        level = self._level(subject)
        # Against the one version named, whatever the level's transitivity (as Confluent does).
        problems = _problems(
            level.removesuffix("_TRANSITIVE"), versions[number - 1 : number], self.schemas, schema
        )
        body: dict[str, Any] = {"is_compatible": not problems}
        if request.query.get("verbose") == "true":
            body["messages"] = problems
        return _answer(body)

    # The state's reading.

    def _level(self, subject: str) -> str:
        return self.compatibility.get(subject, self.global_compatibility)

    def _problems(self, subject: str, schema: str, versions: list[int]) -> list[str]:
        level = self._level(subject)
        if not level.endswith("_TRANSITIVE"):
            versions = versions[-1:]
        return _problems(level.removesuffix("_TRANSITIVE"), versions, self.schemas, schema)

    def _versions(self, subject: str) -> list[int]:
        versions = self.subjects.get(subject)
        if not versions:
            raise RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")
        return versions

    def _version_number(self, request: web.Request, subject: str) -> int:
        versions = self._versions(subject)
        raw = request.match_info["version"]
        if raw in ("latest", "-1"):
            return len(versions)
        try:
            number = int(raw)
        except ValueError:
            number = 0
        if number < 1:
            raise RegistryError(
                422,
                INVALID_VERSION,
                f"The specified version '{raw}' is not a valid version id. Allowed values are "
                'between [1, 2^31-1] and the string "latest"',
            )
        if number > len(versions):
            raise RegistryError(404, VERSION_NOT_FOUND, f"Version {number} not found.")
        return number

    def _version_body(self, subject: str, number: int) -> dict[str, Any]:
        schema_id = self.subjects[subject][number - 1]
        return {
            "subject": subject,
            "version": number,
            "id": schema_id,
            "schema": self.schemas[schema_id - 1],
        }


# Requests and answers.


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise RegistryError(400, 400, "Unrecognized field or malformed JSON") from None


def _answer(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=CONTENT_TYPE)


def _schema_of(body: Any) -> str:
    """The Avro schema of a register, lookup or compatibility request, checked to parse."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(422, INVALID_SCHEMA, "Invalid schema: the body has no schema string")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise RegistryError(
            422,
            INVALID_SCHEMA,
            f"Invalid schema type {body['schemaType']}: this stand-in speaks Avro",
        )
    if body.get("references"):
        raise RegistryError(422, INVALID_SCHEMA, "Invalid schema: references are not supported")
    try:
        fastavro.parse_schema(json.loads(body["schema"]))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise RegistryError(
            422, INVALID_SCHEMA, f"Invalid schema {body['schema']}: {exc}"
        ) from None
    return str(body["schema"])


def _level_of(body: Any) -> str:
    level = body.get("compatibility") if isinstance(body, dict) else None
    if level not in COMPATIBILITY_LEVELS:
        raise RegistryError(
            422,
            INVALID_COMPATIBILITY_LEVEL,
            f"Invalid compatibility level. Valid values are {', '.join(COMPATIBILITY_LEVELS)}",
        )
    return str(level)


def _compact(schema: str) -> str:
    return json.dumps(json.loads(schema), separators=(",", ":"))


def _same(a: str, b: str) -> bool:
    """The same schema, written with other white space or key order (defaults and docs count)."""
    return bool(json.loads(a) == json.loads(b))


# Avro's schema resolution: can a reader with one schema read what a writer wrote with another?
# (The specification's "Schema Resolution" section, on fastavro's parsed and expanded schemas.)

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _problems(level: str, versions: list[int], schemas: list[str], new: str) -> list[str]:
    """Why `new` breaks `level` against the given versions' schemas (empty: it does not)."""
    problems: list[str] = []
    for schema_id in versions:
        old = schemas[schema_id - 1]
        if level in ("BACKWARD", "FULL"):
            problems += [
                f"the new schema cannot read data of id {schema_id}: {p}"
                for p in reading_problems(old, new)
            ]
        if level in ("FORWARD", "FULL"):
            problems += [
                f"id {schema_id} cannot read data of the new schema: {p}"
                for p in reading_problems(new, old)
            ]
    return problems


def reading_problems(writer: str, reader: str) -> list[str]:
    """What stops a reader of schema `reader` from reading data written with `writer`."""
    return _resolve(_expanded(writer), _expanded(reader), "")


def _expanded(schema: str) -> Any:
    return fastavro.schema.expand_schema(fastavro.parse_schema(json.loads(schema)))


def _type(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def _resolve(writer: Any, reader: Any, where: str) -> list[str]:
    here = where or "/"
    w, r = _type(writer), _type(reader)
    if w == "union":  # every branch the writer may have written must be readable
        return [p for branch in writer for p in _resolve(branch, reader, where)]
    if r == "union":
        if any(not _resolve(writer, branch, where) for branch in reader):
            return []
        return [f"{here}: the reader's union has no branch for the writer's {w}"]
    if w != r and r not in _PROMOTIONS.get(w, set()):
        return [f"{here}: the writer's {w} cannot be read as {r}"]
    if r == "record":
        if writer.get("name") != reader.get("name"):
            return [f"{here}: record {writer.get('name')} read as {reader.get('name')}"]
        written = {f["name"]: f for f in writer["fields"]}
        problems = []
        for f in reader["fields"]:
            source = next(
                (written[n] for n in (f["name"], *f.get("aliases", ())) if n in written), None
            )
            if source is not None:
                problems += _resolve(source["type"], f["type"], f"{where}/{f['name']}")
            elif "default" not in f:
                problems.append(f"{where}/{f['name']}: a new field without a default")
        return problems
    if r == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        if missing and "default" not in reader:
            return [f"{here}: the reader's enum lacks {sorted(missing)}"]
        return []
    if r == "array":
        return _resolve(writer["items"], reader["items"], f"{where}/items")
    if r == "map":
        return _resolve(writer["values"], reader["values"], f"{where}/values")
    fixed = ("size", "name")
    if r == "fixed" and [writer.get(k) for k in fixed] != [reader.get(k) for k in fixed]:
        return [f"{here}: fixed {writer.get('name')} read as {reader.get('name')}"]
    return []


@asynccontextmanager
async def running_registry(
    standin: SchemaRegistryStandIn | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[SchemaRegistryStandIn, str]]:
    """The stand-in served in this event loop (over TLS with a server context); yields it and
    its base URL."""
    standin = standin or SchemaRegistryStandIn()
    runner = web.AppRunner(standin.app(), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
        bound = runner.addresses[0]
        yield standin, f"{'https' if tls else 'http'}://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in for Confluent Schema Registry.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--user", action="append", default=[], help="name:password (repeatable)")
    args = parser.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    web.run_app(SchemaRegistryStandIn(users).app(), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
