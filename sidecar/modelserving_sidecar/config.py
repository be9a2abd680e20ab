"""The sidecar's settings: parsed once at start from the file the operator renders.

The file (YAML or JSON; the operator writes it to the serving's sidecar
ConfigMap, key `sidecar.yaml`) looks like this; every key but `serving` and
`model` has a default:

    serving: {name: mnist, namespace: demo, projectId: 80}
    model: {name: mnist, version: 1, modelId: 17}
    listen: {host: 0.0.0.0, port: 8080}
    upstream: {url: "http://127.0.0.1:8501", timeoutSeconds: 60, connectTimeoutSeconds: 5,
               maxConnections: 256, startupAllowanceSeconds: 600}
    limits: {maxRequestBytes: 10485760}
    shadow: {maxConcurrency: 8, queueSize: 256, timeoutSeconds: 30}
    auth: {mode: apiKey, apiKeysDir: /etc/modelserving/apikeys, audience: "",
           allowCacheSeconds: 300, denyCacheSeconds: 30, kubeconfig: ""}
    logging: {mode: ALL, topic: mnist-inference, bootstrapServers: "kafka:9092",
              spoolDir: /var/spool/modelserving, spoolMaxBytes: 1073741824,
              spoolFullPolicy: reject, durability: spooled, spoolSegmentBytes: 8388608,
              spoolFsyncIntervalSeconds: 1.0, spoolFlushIntervalSeconds: 0.005,
              queueSize: 10000, maxInFlightRecords: 10000,
              lingerMs: 20, compression: zstd, sendTimeoutSeconds: 30,
              producerStallSeconds: 30, drainTimeoutSeconds: 20, confluentSchemaId: 7,
              successSampleRate: 1.0, errorSampleRate: 1.0, maxPayloadBytes: 262144,
              oversizePayload: truncate, nonJsonPayload: keep,
              redact: [{path: "instances[*].email", action: mask, payload: both}]}
    tracing: {endpoint: "http://otel-collector.monitoring:4318/v1/traces", ratio: 0.01}

`logging.kafkaSecurity` says how the producer connects to a secured Kafka, with files (the
operator mounts Secrets there): {protocol: SASL_SSL, caFile: .../ca.crt, certFile, keyFile,
saslMechanism: SCRAM-SHA-512, username: u, passwordFile: .../password, checkHostname: true}
(modelserving.kafka_security.config_file); absent, PLAINTEXT.

In `logging`, `schemaRegistry` (absent by default) switches the Kafka values from plain Avro
to Confluent's wire format, with the id the registry gives the `inferencelog` schema under the
subject (the operator registers it; the sidecar only looks it up, and records wait in the spool
until it knows the id): {url: https://registry:8081, subject: mnist-inference-value, caFile,
usernameFile, passwordFile} (files: Secrets the operator mounts, read at each lookup);
`confluentSchemaId` frames them with an id given instead (one or the other). `compression` is
zstd (the default), lz4, gzip, snappy or none; a topic's readers need Kafka 2.1 or later for zstd.

What is logged: `mode` ALL, PREDICTIONS, MODEL_INPUTS, ERRORS (request and answer of non-2xx
answers only) or NONE; `successSampleRate` and `errorSampleRate` (0 to 1) keep that share of
2xx and of other answers, chosen by a hash of the request id; `maxPayloadBytes` (0: no limit)
cuts each payload to that many bytes (`oversizePayload: truncate`) or replaces it by its length
and SHA-256 (`digest`); `redact` drops, masks or hashes the values at JSON paths of the request,
the response or both (see modelserving_sidecar.log.policy for the path grammar); a payload that
is not JSON is logged as it came (`nonJsonPayload: keep`) or left empty (`drop`); left out, it
is left empty where a redaction rule applies to it (redaction fails closed) and kept elsewhere.

When an answer leaves: `durability: spooled` (the default) answers only once the record is in
the spool file (a crash of the sidecar loses no answered record; the writes are grouped: every
record waiting goes in one write as soon as the previous write is done); `buffered` answers at
once and writes the record to the spool within `spoolFlushIntervalSeconds` (a crash of the
sidecar loses at most that interval's records).

`upstream.startupAllowanceSeconds` is how long TF Serving may go without answering once after
the sidecar starts before the pod's model report says it is down rather than starting (it opens
its ports only once it has loaded the model; see modelserving_sidecar.model.state).

`shadow` bounds the copies of requests sent to a shadow version (the routing file, `routing.yaml`
beside this file, says which version and what share; see modelserving_sidecar.routing.split):
at most `maxConcurrency` with TF Serving at once, `queueSize` waiting, each given `timeoutSeconds`.

`logging.sampleKey` is the serving's secret for sampling (the operator renders one per serving,
the same for all its pods): the request id is hashed with it, so a caller cannot choose ids that
are never logged. Left out, each sidecar draws its own at start (its pods then sample a retried
request each their own way).

`tracing` sends spans over OTLP/HTTP to `endpoint` (a collector's `/v1/traces` URL; empty, the
default: the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT variable
when set, else no spans at all). A caller's sampled `traceparent` is always continued; `ratio`
(0 to 1, default 0) is the share of the other requests that start a trace of their own. The W3C
trace context is propagated either way (see modelserving_sidecar.tracing).

`auth.kubeconfig` is for a sidecar run outside a pod: empty means the pod's service account
(or the KUBECONFIG variable when not in a pod).

A bad setting fails the start with a message that names it (`ConfigError`).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelserving.api import (
    GRPC_MAX_MESSAGE_BYTES,
    LOG_COMPRESSION,
    LOG_DRAIN_SECONDS,
    LOG_DURABILITY,
    LOG_MAX_PAYLOAD_BYTES,
    SIDECAR_GRPC_PORT,
    SIDECAR_PORT,
    SPOOL_FSYNC_INTERVAL_SECONDS,
    TFSERVING_GRPC_PORT,
    TFSERVING_REST_PORT,
    TFSERVING_STARTUP_ALLOWANCE_SECONDS,
)
from modelserving.kafka_security.config_file import from_mapping
from modelserving.kafka_security.settings import KafkaSecurity, KafkaSecurityError
from modelserving_sidecar.log.policy import (
    LogPolicy,
    NonJsonPolicy,
    OversizePolicy,
    RedactAction,
    RedactPathError,
    RedactRule,
    RedactTarget,
)


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it and says what is expected."""


class AuthMode(enum.StrEnum):
    API_KEY = "apiKey"
    KUBERNETES = "kubernetes"
    NONE = "none"


class LoggingMode(enum.StrEnum):
    """Hopsworks' inference-logging modes: what of each exchange goes to the log."""

    ALL = "ALL"  # request and response
    PREDICTIONS = "PREDICTIONS"  # the response only (inferenceRequest left empty)
    MODEL_INPUTS = "MODEL_INPUTS"  # the request only (inferenceResponse left empty)
    ERRORS = "ERRORS"  # request and response of answers that are not 2xx (502/504 included)
    NONE = "NONE"  # no log


class LogCompression(enum.StrEnum):
    """The producer's compression codec (aiokafka's names)."""

    NONE = "none"
    GZIP = "gzip"
    LZ4 = "lz4"
    ZSTD = "zstd"
    SNAPPY = "snappy"


class LogDurability(enum.StrEnum):
    """When an answer may leave the sidecar, against its record's safety."""

    # The default. Answered only once the record is written to the spool file: a crash of the
    # sidecar loses no answered record (a power loss: spoolFsyncIntervalSeconds). A record that
    # cannot be kept turns the answer into a 503.
    SPOOLED = "spooled"
    # Answered at once; the record is written to the spool within spoolFlushIntervalSeconds,
    # so a crash of the sidecar loses at most that interval's answered records.
    BUFFERED = "buffered"


DEFAULT_DURABILITY = LogDurability(LOG_DURABILITY)
DEFAULT_COMPRESSION = LogCompression(LOG_COMPRESSION)


class SpoolFullPolicy(enum.StrEnum):
    REJECT = "reject"  # refuse new predictions with 503 until the spool drains
    DROP_NEWEST = "dropNewest"  # answer, drop the record, count it


@dataclass(frozen=True)
class ServingIdentity:
    name: str
    namespace: str
    project_id: int | None = None  # a numeric Hopsworks-style project id also accepted in paths


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: int
    model_id: int  # the serving's status.modelId: the Avro modelId


@dataclass(frozen=True)
class ListenConfig:
    host: str = "0.0.0.0"
    port: int = SIDECAR_PORT


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = f"http://127.0.0.1:{TFSERVING_REST_PORT}"
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 5.0
    max_connections: int = 256
    # Not answering once since the start within this is starting (loading), after it down.
    startup_allowance_seconds: float = float(TFSERVING_STARTUP_ALLOWANCE_SECONDS)


@dataclass(frozen=True)
class GrpcConfig:
    """TF Serving's gRPC API on the sidecar (`grpc_gateway`)."""

    port: int = SIDECAR_GRPC_PORT  # on listen.host; 0: no gRPC port
    upstream: str = f"127.0.0.1:{TFSERVING_GRPC_PORT}"  # TF Serving's gRPC port
    # The largest message taken from a caller and passed between the sidecar and TF Serving,
    # either way: gRPC's own default of 4 MiB is too small for many models' tensors. A larger
    # request gets RESOURCE_EXHAUSTED.
    max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class LimitsConfig:
    max_request_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class ShadowConfig:
    max_concurrency: int = 8  # copies with TF Serving at once (each holds one connection)
    queue_size: int = 256  # copies waiting; one more is dropped, and counted
    timeout_seconds: float = 30.0  # a copy not answered by then is logged as a 504


@dataclass(frozen=True)
class AuthConfig:
    mode: AuthMode = AuthMode.API_KEY
    api_keys_dir: str = "/etc/modelserving/apikeys"
    audience: str = ""
    # A token allowed is not asked about again for this long, nor past its expiry (a JWT's exp).
    allow_cache_seconds: float = 300.0
    deny_cache_seconds: float = 30.0
    kubeconfig: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    mode: LoggingMode = LoggingMode.NONE
    topic: str = ""
    bootstrap_servers: str = ""
    spool_dir: str = "/var/spool/modelserving"
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_full_policy: SpoolFullPolicy = SpoolFullPolicy.REJECT
    durability: LogDurability = DEFAULT_DURABILITY
    spool_segment_bytes: int = 8 * 1024 * 1024  # a segment file is deleted once all is acked
    # A SIGKILL loses nothing written; records written less than this long before a power loss
    # may be lost.
    spool_fsync_interval_seconds: float = SPOOL_FSYNC_INTERVAL_SECONDS
    # An answered request's record is written to the spool within this (so a SIGKILL after it
    # loses nothing); what arrives meanwhile goes in the same write, then the same Kafka batch.
    spool_flush_interval_seconds: float = 0.005
    queue_size: int = 10_000  # exchanges waiting in memory to be encoded and spooled
    max_in_flight_records: int = 10_000  # records handed to the producer and not yet acked
    # Spooled records wait up to this long to go to Kafka together: one send per linger at a
    # steady rate, so the producer's round trip is paid per batch, not per spool write.
    linger_ms: int = 20
    compression: LogCompression = DEFAULT_COMPRESSION
    send_timeout_seconds: float = 30.0  # a send not acked by then is retried from the spool
    producer_stall_seconds: float = 30.0  # no ack for this long, broker reachable: new producer
    # SIGTERM: time to deliver what is queued (then spooled)
    drain_timeout_seconds: float = LOG_DRAIN_SECONDS
    confluent_schema_id: int | None = None  # Confluent framing instead of plain Avro when set
    # Confluent framing with the id the registry has for the schema (looked up, not given).
    schema_registry: SchemaRegistryConfig | None = None
    success_sample_rate: float = 1.0  # share of 2xx answers logged, by a hash of the request id
    error_sample_rate: float = 1.0  # share of other answers logged
    max_payload_bytes: int = LOG_MAX_PAYLOAD_BYTES  # per payload; 0: no limit
    oversize_payload: OversizePolicy = OversizePolicy.TRUNCATE
    # None: drop where a redaction rule applies, keep elsewhere (log_policy.non_json_policy).
    non_json_payload: NonJsonPolicy | None = None
    redact: tuple[RedactRule, ...] = ()
    # The key of the request id's hash for sampling; never in a repr, as callers must not know it.
    sample_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    # How the producer connects: Secrets mounted as files, read by each new producer.
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def policy(self) -> LogPolicy:
        """The sampling and payload rules of these settings, compiled."""
        return LogPolicy(
            errors_only=self.mode is LoggingMode.ERRORS,
            success_rate=self.success_sample_rate,
            error_rate=self.error_sample_rate,
            max_payload_bytes=self.max_payload_bytes,
            oversize=self.oversize_payload,
            non_json=self.non_json_payload,
            rules=self.redact,
            sample_key=self.sample_key.encode(),
        )


@dataclass(frozen=True)
class SchemaRegistryConfig:
    """`logging.schemaRegistry`: where the sidecar looks up the id it frames records with."""

    url: str
    subject: str
    ca_file: str = ""  # PEM; empty: the system's CAs
    username_file: str = ""  # basic auth when both files are given
    password_file: str = ""

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.ca_file, self.username_file, self.password_file) if f)


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str = ""  # OTLP/HTTP traces URL; empty: the OTEL_* variables', else no spans
    ratio: float = 0.0  # requests without a caller's trace context that start one of their own


@dataclass(frozen=True)
class SidecarConfig:
    serving: ServingIdentity
    model: ModelIdentity
    listen: ListenConfig = ListenConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    limits: LimitsConfig = LimitsConfig()
    grpc: GrpcConfig = GrpcConfig()
    shadow: ShadowConfig = ShadowConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    tracing: TracingConfig = TracingConfig()


def _rate(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: expected a number from 0 to 1, got {value!r}")
    return float(value)


def _non_negative(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: expected an integer of 0 or more, got {value!r}")
    return value


def _positive(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected an integer of 1 or more, got {value!r}")
    return value


_RULE_KEYS = {
    "path": ("path", str),
    "action": ("action", RedactAction),
    "payload": ("target", RedactTarget),
}


def redact_rules(where: str, value: Any) -> tuple[RedactRule, ...]:
    """Redaction rules from their file form, [{path, action, payload}], errors naming `where`."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of rules, got {value!r}")
    rules = []
    for i, raw in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict) or "path" not in raw:
            raise ConfigError(f"{at}: expected a mapping with a path, got {raw!r}")
        rule = RedactRule(**_fields(at, raw, _RULE_KEYS))
        try:
            rule.steps()
        except RedactPathError as exc:
            raise ConfigError(f"{at}.path: {exc}") from None
        rules.append(rule)
    return tuple(rules)


def kafka_security(where: str, value: Any) -> KafkaSecurity:
    """`logging.kafkaSecurity`: modelserving.kafka_security.config_file's form."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    try:
        return from_mapping(where, value)
    except KafkaSecurityError as exc:
        raise ConfigError(str(exc)) from None


_REGISTRY_KEYS = {
    "url": ("url", str),
    "subject": ("subject", str),
    "caFile": ("ca_file", str),
    "usernameFile": ("username_file", str),
    "passwordFile": ("password_file", str),
}


def schema_registry(where: str, value: Any) -> SchemaRegistryConfig:
    """`logging.schemaRegistry`, errors naming `where`."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    fields = _fields(where, value, _REGISTRY_KEYS)
    for key in ("url", "subject"):
        if not fields.get(_REGISTRY_KEYS[key][0]):
            raise ConfigError(f"{where}.{key}: required")
    if not fields["url"].startswith(("http://", "https://")):
        url = fields["url"]
        raise ConfigError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
    if bool(fields.get("username_file")) != bool(fields.get("password_file")):
        raise ConfigError(f"{where}: usernameFile and passwordFile go together")
    return SchemaRegistryConfig(**fields)


# file key -> (dataclass field, type); the one table of the file's names.
_SECTIONS: dict[str, tuple[type, dict[str, tuple[str, Any]]]] = {
    "serving": (
        ServingIdentity,
        {"name": ("name", str), "namespace": ("namespace", str), "projectId": ("project_id", int)},
    ),
    "model": (
        ModelIdentity,
        {"name": ("name", str), "version": ("version", int), "modelId": ("model_id", int)},
    ),
    "listen": (ListenConfig, {"host": ("host", str), "port": ("port", int)}),
    "upstream": (
        UpstreamConfig,
        {
            "url": ("url", str),
            "timeoutSeconds": ("timeout_seconds", float),
            "connectTimeoutSeconds": ("connect_timeout_seconds", float),
            "maxConnections": ("max_connections", int),
            "startupAllowanceSeconds": ("startup_allowance_seconds", float),
        },
    ),
    "limits": (LimitsConfig, {"maxRequestBytes": ("max_request_bytes", int)}),
    "grpc": (
        GrpcConfig,
        {
            "port": ("port", _non_negative),
            "upstream": ("upstream", str),
            "maxMessageBytes": ("max_message_bytes", _positive),
        },
    ),
    "shadow": (
        ShadowConfig,
        {
            "maxConcurrency": ("max_concurrency", _positive),
            "queueSize": ("queue_size", _positive),
            "timeoutSeconds": ("timeout_seconds", float),
        },
    ),
    "auth": (
        AuthConfig,
        {
            "mode": ("mode", AuthMode),
            "apiKeysDir": ("api_keys_dir", str),
            "audience": ("audience", str),
            "allowCacheSeconds": ("allow_cache_seconds", float),
            "denyCacheSeconds": ("deny_cache_seconds", float),
            "kubeconfig": ("kubeconfig", str),
        },
    ),
    "logging": (
        LoggingConfig,
        {
            "mode": ("mode", LoggingMode),
            "topic": ("topic", str),
            "bootstrapServers": ("bootstrap_servers", str),
            "spoolDir": ("spool_dir", str),
            "spoolMaxBytes": ("spool_max_bytes", int),
            "spoolFullPolicy": ("spool_full_policy", SpoolFullPolicy),
            "durability": ("durability", LogDurability),
            "spoolSegmentBytes": ("spool_segment_bytes", int),
            "spoolFsyncIntervalSeconds": ("spool_fsync_interval_seconds", float),
            "spoolFlushIntervalSeconds": ("spool_flush_interval_seconds", float),
            "queueSize": ("queue_size", int),
            "maxInFlightRecords": ("max_in_flight_records", int),
            "lingerMs": ("linger_ms", int),
            "compression": ("compression", LogCompression),
            "sendTimeoutSeconds": ("send_timeout_seconds", float),
            "producerStallSeconds": ("producer_stall_seconds", float),
            "drainTimeoutSeconds": ("drain_timeout_seconds", float),
            "confluentSchemaId": ("confluent_schema_id", int),
            "schemaRegistry": ("schema_registry", schema_registry),
            "successSampleRate": ("success_sample_rate", _rate),
            "errorSampleRate": ("error_sample_rate", _rate),
            "maxPayloadBytes": ("max_payload_bytes", _non_negative),
            "oversizePayload": ("oversize_payload", OversizePolicy),
            "nonJsonPayload": ("non_json_payload", NonJsonPolicy),
            "redact": ("redact", redact_rules),
            "sampleKey": ("sample_key", str),
            "kafkaSecurity": ("kafka_security", kafka_security),
        },
    ),
    "tracing": (
        TracingConfig,
        {"endpoint": ("endpoint", str), "ratio": ("ratio", _rate)},
    ),
}
_REQUIRED_SECTIONS = ("serving", "model")


def _convert(where: str, value: Any, kind: Any) -> Any:
    if value is None and kind is int and where == "serving.projectId":
        return None
    if not isinstance(kind, type):  # a parser of its own (it names `where` in its errors)
        return kind(where, value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(m.value for m in kind)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}") from None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _fields(where: str, raw: dict[str, Any], table: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The mapping's keys turned into dataclass fields by `table`; an unknown key is an error."""
    bad = sorted(set(raw) - set(table))
    if bad:
        known = ", ".join(table)
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; known: {known}")
    return {
        attr: _convert(f"{where}.{key}", raw[key], kind)
        for key, (attr, kind) in table.items()
        if key in raw
    }


def parse_config(data: Any) -> SidecarConfig:
    """Turn the file's mapping into a SidecarConfig, naming the first bad setting."""
    if not isinstance(data, dict):
        raise ConfigError("the sidecar config must be a mapping of sections")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    sections: dict[str, Any] = {}
    for section, (cls, fields) in _SECTIONS.items():
        raw = data.get(section)
        if raw is None:
            if section in _REQUIRED_SECTIONS:
                raise ConfigError(f"{section}: required section is missing")
            continue
        if not isinstance(raw, dict):
            raise ConfigError(f"{section}: expected a mapping, got {raw!r}")
        kwargs = _fields(section, raw, fields)
        try:
            sections[section] = cls(**kwargs)
        except TypeError as exc:
            missing = [k for k, (attr, _) in fields.items() if f"'{attr}'" in str(exc)]
            raise ConfigError(f"{section}: missing {', '.join(missing) or exc}") from None
    config = SidecarConfig(**sections)
    if config.logging.mode is not LoggingMode.NONE and not (
        config.logging.topic and config.logging.bootstrap_servers
    ):
        raise ConfigError("logging: mode is not NONE, so topic and bootstrapServers are required")
    if config.logging.schema_registry and config.logging.confluent_schema_id is not None:
        raise ConfigError(
            "logging: schemaRegistry looks the schema id up, confluentSchemaId gives one: not both"
        )
    return config


def load_config(path: str | Path) -> SidecarConfig:
    """Read and parse the config file; errors name the file and the setting."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the sidecar config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the sidecar config {path} is not valid YAML: {exc}") from None
    return parse_config(data)
