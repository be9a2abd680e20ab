"""The inference log's schema in the serving's schema registry: the `inferencelog` schema
registered under its topic's subject (`<topic>-value`, Confluent's TopicNameStrategy, what
consumers look up), that subject's compatibility set to BACKWARD first (`register_schema`).
`registry_of` reads the CA and credentials spec.logging.kafka.schemaRegistry names from their
Secret or ConfigMap through the API; `what_to_check` says which of them to look at when the
registry refuses. The API's requests and answers are modelserving.inferencelog.schema_registry's.

The sidecar looks the id up itself (modelserving_sidecar.log.framing), with the same CA and
credentials as files: `sidecar_registry` is its settings, `registry_volumes` and
`registry_mounts` put the Secret's and ConfigMap's entries where those settings say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelserving.inferencelog.schema_registry import (
    REGISTRY_AUTHENTICATION_FAILED,
    REGISTRY_CREDENTIALS_MISSING,
    REGISTRY_FAILED,
    REGISTRY_TLS_FAILED,
    TIMEOUT_SECONDS,
    Registered,
    RegistryProblem,
    SchemaRegistry,
    ask,
    compatibility_request,
    register_request,
    registered_id,
    subject_of,
)
from modelserving_operator.kafka.security import (
    CA_KEY,
    SECRET_FILE_MODE,
    KafkaCaSpec,
    MissingCredentials,
    SecretReader,
    ca_volume,
    read_entry,
)
from modelserving_operator.status.conditions import LoggingState


@dataclass(frozen=True)
class RegistryCredentialsSpec:
    """spec.logging.kafka.schemaRegistry.credentials: basic auth from a Secret's entries (by
    default those of a kubernetes.io/basic-auth Secret)."""

    secret_name: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class SchemaRegistrySpec:
    """spec.logging.kafka.schemaRegistry: where the log's schema is registered; its presence
    frames every record in Confluent's wire format."""

    url: str
    ca: KafkaCaSpec | None = None  # from a Secret or a ConfigMap, as security.ca
    credentials: RegistryCredentialsSpec | None = None


# The CRD's rule of schemaRegistry.url (crds/), in Python's re (the same for this pattern as the
# API server's RE2): http(s), a host, a path, and no user, password, query or fragment.
REGISTRY_URL = re.compile(r"^https?://[^/@?#\s]+(/[^@?#\s]*)?$")
REGISTRY_FIELD = "spec.logging.kafka.schemaRegistry"


def parse_schema_registry(
    raw: Mapping[str, Any], where: str = REGISTRY_FIELD
) -> SchemaRegistrySpec:
    """The block as written (the CRD's defaults applied here too), refused with the words of
    the CRD's rules where it breaks one."""
    url = raw.get("url")
    if not isinstance(url, str) or not REGISTRY_URL.match(url):
        raise ValueError(
            f"{where}.url must be http(s)://HOST[:PORT][/PATH], with no user or password in it "
            "(give those in credentials)"
        )
    ca, credentials = raw.get("ca"), raw.get("credentials")
    if ca is not None and bool(ca.get("secretName")) == bool(ca.get("configMapName")):
        raise ValueError(
            f"{where}.ca names one source: secretName or configMapName, not both and not neither"
        )
    if ca is not None and not url.startswith("https://"):
        raise ValueError(
            f"{where}: ca is set but the url is not https: use an https:// url, or remove ca"
        )
    if credentials is not None and not credentials.get("secretName"):
        raise ValueError(f"{where}.credentials.secretName is required")
    return SchemaRegistrySpec(
        url,
        ca=KafkaCaSpec(ca.get("secretName"), ca.get("configMapName"), ca.get("key") or CA_KEY)
        if ca is not None
        else None,
        credentials=RegistryCredentialsSpec(
            credentials["secretName"],
            credentials.get("usernameKey") or "username",
            credentials.get("passwordKey") or "password",
        )
        if credentials is not None
        else None,
    )


# Where the sidecar finds the registry's CA and credentials: one folder per volume, so that a
# Secret changed in place reaches the running pod (read at each lookup).
SIDECAR_REGISTRY_DIR = "/etc/modelserving/schema-registry"
CA_DIR = f"{SIDECAR_REGISTRY_DIR}/ca"
CREDENTIALS_DIR = f"{SIDECAR_REGISTRY_DIR}/credentials"
USERNAME_FILE = "username"
PASSWORD_FILE = "password"


def sidecar_registry(spec: SchemaRegistrySpec, topic: str) -> dict[str, str]:
    """The sidecar's `logging.schemaRegistry`: the URL, the subject, and its files."""
    settings = {"url": spec.url, "subject": subject_of(topic)}
    if spec.ca is not None:
        settings["caFile"] = f"{CA_DIR}/{CA_KEY}"  # ca_volume's file
    if spec.credentials is not None:
        settings["usernameFile"] = f"{CREDENTIALS_DIR}/{USERNAME_FILE}"
        settings["passwordFile"] = f"{CREDENTIALS_DIR}/{PASSWORD_FILE}"
    return settings


def registry_volumes(spec: SchemaRegistrySpec) -> list[dict[str, Any]]:
    """Only the entries named, each under a fixed file name: a Secret lacking one keeps the pod
    from starting, with the kubelet's event naming it."""
    volumes: list[dict[str, Any]] = []
    if spec.ca is not None:
        volumes.append(ca_volume("schema-registry-ca", spec.ca))
    if spec.credentials is not None:
        creds = spec.credentials
        items = [
            {"key": creds.username_key, "path": USERNAME_FILE},
            {"key": creds.password_key, "path": PASSWORD_FILE},
        ]
        secret = {"secretName": creds.secret_name, "items": items, "defaultMode": SECRET_FILE_MODE}
        volumes.append({"name": "schema-registry-credentials", "secret": secret})
    return volumes


def registry_mounts(spec: SchemaRegistrySpec) -> list[dict[str, Any]]:
    folders = {"schema-registry-ca": CA_DIR, "schema-registry-credentials": CREDENTIALS_DIR}
    return [
        {"name": volume["name"], "mountPath": folders[volume["name"]], "readOnly": True}
        for volume in registry_volumes(spec)
    ]


def registry_secrets(spec: SchemaRegistrySpec) -> tuple[str, ...]:
    """The Secrets the registration reads (a CA in a ConfigMap is not one)."""
    names = set()
    if spec.ca is not None and spec.ca.secret_name:
        names.add(spec.ca.secret_name)
    if spec.credentials is not None:
        names.add(spec.credentials.secret_name)
    return tuple(sorted(names))


def logging_state(problem: RegistryProblem) -> LoggingState:
    """LoggingReady while the schema is not registered: the problem's reason and words."""
    return LoggingState(False, problem.reason, problem.message)


async def registry_of(
    kube: SecretReader, namespace: str, spec: SchemaRegistrySpec
) -> SchemaRegistry | RegistryProblem:
    """How to speak to the registry the spec names, with its CA and credentials read through
    the API (held in memory only), or which Secret, ConfigMap or entry is missing."""
    values: dict[str, str] = {}
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
        try:
            found = await read_entry(kube, kind, name, namespace, key, f"{REGISTRY_FIELD}.{field}")
        except MissingCredentials as exc:
            return RegistryProblem(REGISTRY_CREDENTIALS_MISSING, str(exc))
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
    answered = await ask(
        registry,
        (
            (compatibility_request(subject), f"setting the compatibility of {subject}"),
            (register_request(subject, schema), f"registering the schema under {subject}"),
        ),
        timeout,
    )
    if isinstance(answered, RegistryProblem):
        return answered
    schema_id = registered_id(*answered)
    if schema_id is None:
        return RegistryProblem(
            REGISTRY_FAILED,
            f"the schema registry at {registry.shown_url} answered the registration under "
            f"{subject} with no schema id",
        )
    return Registered(subject, schema_id)
