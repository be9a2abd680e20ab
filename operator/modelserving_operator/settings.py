"""The operator's settings: parsed once at start from flags and environment variables.

Every setting has one flag and one environment variable (the flag wins); the
Helm chart sets them by these names. A bad value stops the start with a
message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from modelserving import __version__, api
from modelserving_operator.kafka.schema_registry import SchemaRegistrySpec, parse_schema_registry
from modelserving_operator.kafka.security import PLAINTEXT, KafkaSecuritySpec, parse_security
from modelserving_operator.runtime.peering import MIN_LIFETIME_SECONDS
from modelserving_sidecar.config import (
    ConfigError,
    LogCompression,
    LogDurability,
    LoggingMode,
    redact_rules,
)
from modelserving_sidecar.log.policy import NonJsonPolicy, OversizePolicy, RedactRule

DEFAULT_TFSERVING_IMAGE = f"{api.TFSERVING_IMAGE_REPOSITORY}:{api.TFSERVING_IMAGE_TAG}"
# The name `make image` builds; the chart sets the pushed image's name in its place.
DEFAULT_SIDECAR_IMAGE = f"{api.IMAGE_REPOSITORY}:{__version__}"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_BOOTSTRAP = re.compile(r"^[^,:\s]+:[0-9]+(,[^,:\s]+:[0-9]+)*$")
# The CRD's rule for spec.tracing.endpoint, the same for the operator's default.
_TRACES_URL = re.compile(r"^https?://[^/?# ]+(/[^ ]*)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ANNOTATION_GLOB = re.compile(r"^!?[A-Za-z0-9*?][-A-Za-z0-9_.*?/]*$")
DEFAULT_INGRESS_ALLOWED_ANNOTATIONS = (
    "nginx.ingress.kubernetes.io/*",
    "cert-manager.io/*",
    "!*-snippet",
)


class SettingsError(ValueError):
    """A setting has a bad value; the message names its flag and environment variable."""


@dataclass(frozen=True)
class OperatorSettings:
    kafka_bootstrap_servers: str = ""
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    tfserving_image: str = DEFAULT_TFSERVING_IMAGE
    namespaces: tuple[str, ...] = ()
    operator_namespace: str = "modelserving-system"
    sidecar_auth_cluster_role: str = "modelserving-sidecar-auth"
    sidecar_log_status_cluster_role: str = "modelserving-sidecar-log-status"
    peering: str = "modelserving"
    standalone: bool = False
    # Seconds a replica's peering entry lasts unrenewed: the standby takes over this long
    # (at most) after the active replica dies without leaving (SIGKILL, a lost node).
    peering_lifetime_seconds: int = 15
    log_level: str = "INFO"
    # Reconciles at a time. A serving's first reconcile waits on the API server four times in a
    # row (its modelId, two waves of children, its status): at 1,000 servings created at once,
    # 20 workers kept the API server half idle (all Ready after 152 s, 64 workers 90 s, same
    # machine, the cluster alone 55-63 s); their requests wait on api_concurrency beyond that.
    worker_limit: int = 64
    api_concurrency: int = 32
    api_timeout_seconds: float = 30.0
    watch_timeout_seconds: float = 300.0
    kafka_timeout_seconds: float = 10.0
    retry_seconds: float = 30.0
    # How often the Secrets and ConfigMaps that servings' pods read at start are read again, by
    # name (env_source_checks): a change of one rolls the pods this long after it at most.
    secret_check_seconds: float = 60.0
    # How often the topics in use are described again (topic_checks): one deleted by hand is
    # made again this long after at most, unless a sidecar's producer has a broker with
    # auto-create make it first (then LoggingReady says TopicMismatch if its settings differ).
    topic_check_seconds: float = 30.0
    liveness_port: int = 0
    # The inference log of servings whose spec.logging leaves these out.
    log_mode: str = api.LOG_MODE
    log_durability: str = api.LOG_DURABILITY
    log_compression: str = api.LOG_COMPRESSION
    log_success_sample_rate: float = api.LOG_SUCCESS_SAMPLE_RATE
    log_error_sample_rate: float = api.LOG_ERROR_SAMPLE_RATE
    log_max_payload_bytes: int = api.LOG_MAX_PAYLOAD_BYTES
    log_oversize_payload: str = api.LOG_OVERSIZE_PAYLOAD
    log_non_json_payload: str = api.LOG_NON_JSON_PAYLOAD  # "": unset, the sidecar's rule
    log_redact: tuple[RedactRule, ...] = ()
    # The operator's own Prometheus metrics.
    metrics_port: int = 0
    metrics_path: str = "/metrics"
    # How the log's Kafka clients connect, for servings whose spec has no
    # spec.logging.kafka.security: the same block, as JSON.
    kafka_security: KafkaSecuritySpec = PLAINTEXT
    # The schema registry of servings whose spec has no spec.logging.kafka.schemaRegistry (the
    # same block, as JSON); None: their records stay plain Avro.
    schema_registry: SchemaRegistrySpec | None = None
    # Read Secrets by name (the chart's rbac.readSecrets): the Secret roll and the topic admin's
    # Secret-held Kafka credentials. Off, the operator reads no Secret. It never lists them.
    read_secrets: bool = True
    # Which spec.ingress.annotations a serving may set: globs of keys, a "!" glob refusing what
    # it matches (refusals win). ingress-nginx's *-snippet annotations put nginx configuration
    # of their author's into the controller that serves every namespace's Ingresses.
    ingress_allowed_annotations: tuple[str, ...] = DEFAULT_INGRESS_ALLOWED_ANNOTATIONS
    # Let spec.logging.kafka.topic name any topic; off, a named topic starts with the serving's
    # namespace and a dot, so no serving writes to (or has the operator create) another's.
    any_kafka_topic: bool = False
    # The collector (OTLP/HTTP traces URL) of servings whose spec.tracing names none; empty,
    # their sidecars send no spans (and still carry the W3C trace context).
    tracing_endpoint: str = ""
    # Of the operator's own reconciles, the share that is traced (its spans go to the
    # collector above, or the OTEL_EXPORTER_OTLP_* variables'; none is named: no spans).
    reconcile_trace_ratio: float = 1.0
    # The activator's Service ("NAME" in the operator's namespace, or "NAMESPACE/NAME"): where
    # the endpoints of a serving at zero point, so that its first request is held and wakes it.
    # Empty: no activator, and a serving at zero refuses requests until scaled up by hand.
    activator_service: str = ""

    def activator(self) -> tuple[str, str] | None:
        """(namespace, name) of the activator's Service, or None."""
        if not self.activator_service:
            return None
        namespace, _, name = self.activator_service.rpartition("/")
        return (namespace or self.operator_namespace, name)


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _bootstrap(value: str) -> str:
    value = value.strip()
    if value and not _BOOTSTRAP.match(value):
        raise ValueError("must be host:port[,host:port...]")
    return value


def _traces_url(value: str) -> str:
    value = value.strip()
    if value and not _TRACES_URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _service_ref(value: str) -> str:
    value = value.strip()
    if value and not all(_DNS_LABEL.match(part) for part in value.split("/", 1)):
        raise ValueError("must be a Service's NAME or NAMESPACE/NAME")
    return value


def _namespaces(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else re.split(r"[,\s]+", value)
    names = tuple(sorted({n.strip() for n in items if n.strip()}))
    for name in names:
        if not _DNS_LABEL.match(name):
            raise ValueError(f"{name!r} is not a namespace name")
    return names


def _annotation_globs(value: str | list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else re.split(r"[,\s]+", value)
    globs = tuple(dict.fromkeys(g.strip() for g in items if g.strip()))
    for glob in globs:
        if not _ANNOTATION_GLOB.match(glob):
            raise ValueError(f"{glob!r} is not an annotation key glob (such as cert-manager.io/*)")
    return globs


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _positive_int(value: str | int) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _port_or_zero(value: str | int) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("must be a port number, or 0 for none")
    return number


def _positive_float(value: str | float) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be more than 0")
    return number


def _choice(kind: type[enum.Enum]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        try:
            return str(kind(value.strip()).value)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(m.value for m in kind)}") from None

    return parse


def _choice_or_unset(kind: type[enum.Enum]) -> Callable[[str], str]:
    """A choice of `kind`, or empty for none said."""
    choice = _choice(kind)
    return lambda value: choice(value) if value.strip() else ""


def _rate(value: str | float) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be a number from 0 to 1")
    return number


def _non_negative_int(value: str | int) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _redact(value: str | list[Any]) -> tuple[RedactRule, ...]:
    """A JSON list of rules as in spec.logging.redact: [{"path": ..., "action": ...}]."""
    try:
        rules = json.loads(value) if isinstance(value, str) else value
        return redact_rules("rules", rules if rules != "" else [])
    except (ValueError, ConfigError) as exc:
        raise ValueError(f"must be a JSON list of redaction rules: {exc}") from None


def _url_path(value: str) -> str:
    value = value.strip()
    if not re.match(r"^/[A-Za-z0-9._~/-]*$", value):
        raise ValueError("must be a URL path starting with /, such as /metrics")
    return value


def _kafka_security(value: str | Mapping[str, Any]) -> KafkaSecuritySpec:
    """A JSON object as spec.logging.kafka.security; empty for PLAINTEXT."""
    try:
        raw = json.loads(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ValueError(f"must be a JSON object as spec.logging.kafka.security: {exc}") from None
    return parse_security(raw or {}, "the Kafka security") if raw else PLAINTEXT


def _schema_registry(value: str | Mapping[str, Any]) -> SchemaRegistrySpec | None:
    """A JSON object as spec.logging.kafka.schemaRegistry; empty for none."""
    try:
        raw = json.loads(value) if isinstance(value, str) and value.strip() else value
    except ValueError as exc:
        raise ValueError(
            f"must be a JSON object as spec.logging.kafka.schemaRegistry: {exc}"
        ) from None
    if not raw:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"must be a JSON object as spec.logging.kafka.schemaRegistry: {raw!r}")
    return parse_schema_registry(raw, "the schema registry")


def _peering_lifetime(value: str | int) -> int:
    seconds = int(value)
    if seconds < MIN_LIFETIME_SECONDS:
        raise ValueError(f"must be at least {MIN_LIFETIME_SECONDS} (seconds)")
    return seconds


def _flag(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


# field -> (flag, environment variable, parser, help); the one table of the settings' names.
SETTINGS: dict[str, tuple[str, str, Callable[[Any], Any], str]] = {
    "kafka_bootstrap_servers": (
        "--kafka-bootstrap-servers",
        "MODELSERVING_KAFKA_BOOTSTRAP",
        _bootstrap,
        "Kafka brokers (host:port,...) of servings whose spec names none",
    ),
    "sidecar_image": (
        "--sidecar-image",
        "MODELSERVING_SIDECAR_IMAGE",
        _text,
        "the sidecar's container image",
    ),
    "tfserving_image": (
        "--tfserving-image",
        "MODELSERVING_TFSERVING_IMAGE",
        _text,
        "the TF Serving image of servings whose spec names none",
    ),
    "namespaces": (
        "--namespace",
        "MODELSERVING_NAMESPACES",
        _namespaces,
        "watch this namespace (repeatable; the variable takes a comma-separated list); "
        "none watches all namespaces",
    ),
    "operator_namespace": (
        "--operator-namespace",
        "MODELSERVING_OPERATOR_NAMESPACE",
        _text,
        "where an older operator kept the modelId counter (a ConfigMap, read once to carry "
        "it over to the CRD's); "
        "defaults to POD_NAMESPACE, else modelserving-system",
    ),
    "sidecar_auth_cluster_role": (
        "--sidecar-auth-cluster-role",
        "MODELSERVING_SIDECAR_AUTH_CLUSTER_ROLE",
        _text,
        "the ClusterRole (create tokenreviews, subjectaccessreviews) bound to the pods of "
        "servings with auth mode kubernetes",
    ),
    "sidecar_log_status_cluster_role": (
        "--sidecar-log-status-cluster-role",
        "MODELSERVING_SIDECAR_LOG_STATUS_CLUSTER_ROLE",
        _text,
        "the ClusterRole (patch pods/status) bound in their namespace to the pods of servings "
        "that log, so the sidecar can publish its log's health on its pod",
    ),
    "peering": (
        "--peering",
        "MODELSERVING_PEERING",
        _text,
        "the kopf peering name that keeps one operator replica active at a time",
    ),
    "standalone": (
        "--standalone",
        "MODELSERVING_STANDALONE",
        _flag,
        "run without peering (one replica only)",
    ),
    "peering_lifetime_seconds": (
        "--peering-lifetime",
        "MODELSERVING_PEERING_LIFETIME",
        _peering_lifetime,
        "seconds a replica's peering entry lasts unrenewed: how long a standby replica waits "
        "before taking over from an active one that died without leaving",
    ),
    "log_level": (
        "--log-level",
        "MODELSERVING_LOG_LEVEL",
        _log_level,
        "DEBUG, INFO, WARNING or ERROR",
    ),
    "worker_limit": (
        "--worker-limit",
        "MODELSERVING_WORKER_LIMIT",
        _positive_int,
        "how many resources are handled at once",
    ),
    "api_concurrency": (
        "--api-concurrency",
        "MODELSERVING_API_CONCURRENCY",
        _positive_int,
        "how many of the operator's own Kubernetes API requests run at once",
    ),
    "api_timeout_seconds": (
        "--api-timeout",
        "MODELSERVING_API_TIMEOUT",
        _positive_float,
        "seconds before a Kubernetes API request is abandoned and retried",
    ),
    "watch_timeout_seconds": (
        "--watch-timeout",
        "MODELSERVING_WATCH_TIMEOUT",
        _positive_float,
        "seconds a watch request lasts before it is renewed",
    ),
    "kafka_timeout_seconds": (
        "--kafka-timeout",
        "MODELSERVING_KAFKA_TIMEOUT",
        _positive_float,
        "seconds to wait for Kafka when checking or creating a topic",
    ),
    "retry_seconds": (
        "--retry-seconds",
        "MODELSERVING_RETRY_SECONDS",
        _positive_float,
        "seconds before a failed step (Kafka unreachable, API error) is tried again",
    ),
    "secret_check_seconds": (
        "--secret-check-seconds",
        "MODELSERVING_SECRET_CHECK_SECONDS",
        _positive_float,
        "seconds between reads of the Secrets (with --read-secrets) and ConfigMaps that "
        "servings' spec.server.env and envFrom read, by name: one changed in place rolls the "
        "pods that read it this long after the change at most",
    ),
    "topic_check_seconds": (
        "--topic-check-seconds",
        "MODELSERVING_TOPIC_CHECK_SECONDS",
        _positive_float,
        "seconds between looks at the inference log's topics in use (one Kafka Metadata request "
        "per set of brokers): a topic deleted by hand is made again this long after at most",
    ),
    "liveness_port": (
        "--liveness-port",
        "MODELSERVING_LIVENESS_PORT",
        _port_or_zero,
        "serve the liveness probe on http://0.0.0.0:PORT/healthz; 0 for none",
    ),
    "log_mode": (
        "--log-mode",
        "MODELSERVING_LOG_MODE",
        _choice(LoggingMode),
        "what servings log when spec.logging.mode is not set: ALL, PREDICTIONS, MODEL_INPUTS, "
        "ERRORS or NONE",
    ),
    "log_durability": (
        "--log-durability",
        "MODELSERVING_LOG_DURABILITY",
        _choice(LogDurability),
        "when answers of servings whose spec.logging.durability is not set may leave: spooled "
        "(once the record is in the sidecar's spool, so a crash of a sidecar loses no answered "
        "request's record) or buffered (at once; a crash can lose the last few milliseconds' "
        "records)",
    ),
    "log_compression": (
        "--log-compression",
        "MODELSERVING_LOG_COMPRESSION",
        _choice(LogCompression),
        "the sidecars' Kafka producer compression: zstd, lz4, gzip, snappy or none (readers of "
        "the topics need Kafka 2.1 or later for zstd)",
    ),
    "log_success_sample_rate": (
        "--log-success-sample-rate",
        "MODELSERVING_LOG_SUCCESS_SAMPLE_RATE",
        _rate,
        "share of 2xx answers logged (0 to 1) when spec.logging.sampling.successRate is not set",
    ),
    "log_error_sample_rate": (
        "--log-error-sample-rate",
        "MODELSERVING_LOG_ERROR_SAMPLE_RATE",
        _rate,
        "share of other answers logged (0 to 1) when spec.logging.sampling.errorRate is not set",
    ),
    "log_max_payload_bytes": (
        "--log-max-payload-bytes",
        "MODELSERVING_LOG_MAX_PAYLOAD_BYTES",
        _non_negative_int,
        "bytes of each payload a record keeps (0: no limit) when spec.logging.payloads.maxBytes "
        "is not set",
    ),
    "log_oversize_payload": (
        "--log-oversize-payload",
        "MODELSERVING_LOG_OVERSIZE_PAYLOAD",
        _choice(OversizePolicy),
        "truncate or digest a payload over the limit, when spec.logging.payloads.oversize is "
        "not set",
    ),
    "log_non_json_payload": (
        "--log-non-json-payload",
        "MODELSERVING_LOG_NON_JSON_PAYLOAD",
        _choice_or_unset(NonJsonPolicy),
        "keep or drop a payload that is not JSON, when spec.logging.payloads.nonJson is not set; "
        "empty: drop it where a redaction rule applies to it, keep it elsewhere",
    ),
    "log_redact": (
        "--log-redact",
        "MODELSERVING_LOG_REDACT",
        _redact,
        "redaction rules, a JSON list as in spec.logging.redact, of servings whose spec has "
        "no redact list",
    ),
    "metrics_port": (
        "--metrics-port",
        "MODELSERVING_METRICS_PORT",
        _port_or_zero,
        "serve the operator's Prometheus metrics on http://0.0.0.0:PORT/PATH; 0 for none",
    ),
    "metrics_path": (
        "--metrics-path",
        "MODELSERVING_METRICS_PATH",
        _url_path,
        "the URL path of the operator's metrics",
    ),
    "kafka_security": (
        "--kafka-security",
        "MODELSERVING_KAFKA_SECURITY",
        _kafka_security,
        "how the inference log's Kafka clients connect (the sidecars' producers, the operator's "
        "topic admin) for servings whose spec has no spec.logging.kafka.security: the same "
        'block as JSON, e.g. {"protocol": "SASL_SSL", "ca": {"secretName": "my-cluster-cluster-'
        'ca-cert"}, "sasl": {"mechanism": "SCRAM-SHA-512", "passwordSecret": {"name": '
        '"my-user"}}}; the Secrets it names are looked up in each serving\'s namespace',
    ),
    "schema_registry": (
        "--schema-registry",
        "MODELSERVING_SCHEMA_REGISTRY",
        _schema_registry,
        "the schema registry of servings whose spec has no spec.logging.kafka.schemaRegistry: the "
        'same block as JSON, e.g. {"url": "https://registry:8081", "credentials": {"secretName": '
        '"registry-login"}}; the Secrets and ConfigMaps it names are looked up in each serving\'s '
        "namespace. Set, those servings' records are framed in Confluent's wire format",
    ),
    "read_secrets": (
        "--read-secrets",
        "MODELSERVING_READ_SECRETS",
        _flag,
        "read, by name, the Secrets servings name in the watched namespaces (never listed): "
        "false for an operator that may not (the chart's rbac.readSecrets); then a Secret that "
        "spec.server.env or envFrom reads, changed in place, does not roll the pods, and the "
        "topic admin cannot use Kafka credentials held in Secrets (LoggingReady says so; the "
        "sidecars still use them)",
    ),
    "ingress_allowed_annotations": (
        "--ingress-allowed-annotations",
        "MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS",
        _annotation_globs,
        "the spec.ingress.annotations a serving may set: comma-separated globs of annotation "
        "keys; a glob starting with ! refuses the keys it matches, whatever else allows them; "
        "empty allows none. A serving with another annotation gets no Ingress (Degraded says "
        "why)",
    ),
    "any_kafka_topic": (
        "--any-kafka-topic",
        "MODELSERVING_ANY_KAFKA_TOPIC",
        _flag,
        "let spec.logging.kafka.topic name any topic; false: a topic a spec names must start "
        "with the serving's namespace and a dot (NAMESPACE.), so that no serving writes to, or "
        "has the operator create, another namespace's topic (LoggingReady says TopicRefused, "
        "and nothing is logged); the default topic, NAMESPACE.NAME.inference, always does",
    ),
    "tracing_endpoint": (
        "--tracing-endpoint",
        "MODELSERVING_TRACING_ENDPOINT",
        _traces_url,
        "the OTLP/HTTP traces URL (http://collector:4318/v1/traces) the sidecars of servings "
        "whose spec.tracing names none send their sampled calls' spans to; empty: no spans",
    ),
    "reconcile_trace_ratio": (
        "--reconcile-trace-ratio",
        "MODELSERVING_RECONCILE_TRACE_RATIO",
        _rate,
        "of the operator's reconciles, the share that gets a span (to the --tracing-endpoint "
        "collector, else the OTEL_EXPORTER_OTLP_* variables'; none: no spans), from 0 to 1",
    ),
    "activator_service": (
        "--activator-service",
        "MODELSERVING_ACTIVATOR_SERVICE",
        _service_ref,
        "the activator's Service (NAME in the operator's namespace, or NAMESPACE/NAME): the "
        "endpoints of a serving at zero (spec.autoscaling.minReplicas 0) point at its ready "
        "pods, which hold a request and wake the serving; empty: a serving at zero refuses "
        "requests (no endpoints) until it is scaled up",
    ),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; unset flags fall back to the environment, then the default."""
    defaults = OperatorSettings()
    for name, (flag, env, _, help_text) in SETTINGS.items():
        default = getattr(defaults, name)
        if name == "log_redact":
            shown = "[]"
        elif name in ("kafka_security", "schema_registry"):
            shown = "{}"
        else:
            shown = ", ".join(default) if isinstance(default, tuple) else default
        full_help = f"{help_text} [env {env}; default {shown!r}]"
        if name == "standalone":
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=full_help)
        elif name == "namespaces":
            parser.add_argument(flag, dest=name, action="append", help=full_help)
        else:
            parser.add_argument(flag, dest=name, help=full_help)


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> OperatorSettings:
    """Merge flags over environment over defaults, parsing each value once."""
    values: dict[str, Any] = {}
    for field in fields(OperatorSettings):
        flag, env, parse, _ = SETTINGS[field.name]
        raw = getattr(args, field.name, None)
        source = flag
        if raw is None and env in environ:
            raw, source = environ[env], env
        if raw is None and field.name == "operator_namespace" and environ.get("POD_NAMESPACE"):
            raw, source = environ["POD_NAMESPACE"], "POD_NAMESPACE"
        if raw is None:
            continue
        try:
            values[field.name] = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{source} ({flag} / {env}): {raw!r}: {exc}") from None
    return OperatorSettings(**values)
