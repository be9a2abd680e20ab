"""A ModelServing as the operator reads it: parsed once into frozen dataclasses, defaults applied.

`ServingSpec.from_body` is the one reader of a ModelServing's raw spec; the renderers, the
reconciler and the handlers take what it returns. A field's default here is the CRD's
`default:` (crds/; a unit test holds the two together). Where the CRD names no default
because the operator's settings fill in (the log mode, the brokers, the payload rules), the
field is None and the methods that take the settings say what applies.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelserving import api
from modelserving_operator.kafka.schema_registry import SchemaRegistrySpec, parse_schema_registry
from modelserving_operator.kafka.security import (
    KafkaSecuritySpec,
    parse_security,
)
from modelserving_operator.policy import ingress_refusal, spool_claim_refusal, topic_refusal
from modelserving_operator.quantities import quantity_bytes
from modelserving_operator.settings import OperatorSettings

# Said in the CRD's descriptions of server.resources and sidecar.resources. One dict each,
# shared by every spec that names none: manifests are dumped, never edited.
DEFAULT_TFSERVING_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}}
DEFAULT_SIDECAR_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}
# A gRPC call takes about five times its message in the sidecar (the message received, the
# copy sent on to TF Serving, the answer and the log's copies; measured with 16 and 60 MiB
# calls), so the default limit grows by that for the largest message the sidecar accepts:
# 576Mi with the default 64 MiB. A limit reserves nothing; only the request is scheduled.
GRPC_CALL_MEMORY_FACTOR = 5
PVC_SCHEME = "pvc://"

Raw = Mapping[str, Any]


class SpecError(ValueError):
    """The spec lacks a field the CRD requires; the message names it."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelVersion:
    """One version of the model the pods load: a numbered folder under the base path, with the
    percent of requests it answers and its labels."""

    number: int
    weight: int = 100
    labels: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        """The `role` Kafka header of the records it answers: its first label, else stable."""
        return self.labels[0] if self.labels else "stable"


@dataclass(frozen=True)
class ShadowSpec:
    """spec.model.shadow: the version that gets a copy of `percent` of the requests."""

    number: int
    percent: int
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class StickySpec:
    """spec.model.sticky: what keeps a caller on one version (header, caller or none)."""

    by: str = "none"
    header: str | None = None  # the request header, when by is header


@dataclass(frozen=True)
class ModelSpec:
    """spec.model: one version (spec.model.version, `listed` False) or several that share the
    requests by weight (spec.model.versions), an optional shadow and what keeps a caller on
    one version. One version written the old way is a list of one at weight 100."""

    name: str  # in the :predict paths; defaults to the serving's name
    base_path: str
    versions: tuple[ModelVersion, ...]
    shadow: ShadowSpec | None = None
    sticky: StickySpec = StickySpec()
    # spec.model.versions was written: version changes reach running pods without a restart.
    # False for spec.model.version, whose change rolls the pods as it always has.
    listed: bool = False

    @property
    def version(self) -> int:
        """The first version with a weight: the sidecar's fallback when it has no routing file."""
        return next((v.number for v in self.versions if v.weight > 0), self.versions[0].number)

    @property
    def loaded_versions(self) -> tuple[int, ...]:
        """Every version TF Serving loads: the weighted ones and the shadow, ascending."""
        numbers = {v.number for v in self.versions}
        if self.shadow is not None:
            numbers.add(self.shadow.number)
        return tuple(sorted(numbers))

    @property
    def traffic(self) -> str:
        """The split for kubectl get: "3:90 4:10 shadow 5:10%"."""
        text = " ".join(f"{v.number}:{v.weight}" for v in self.versions)
        if self.shadow is not None:
            text += f" shadow {self.shadow.number}:{self.shadow.percent}%"
        return text

    @property
    def claim_name(self) -> str | None:
        """The PersistentVolumeClaim of a pvc://CLAIM/PATH base path, else None."""
        if not self.base_path.startswith(PVC_SCHEME):
            return None
        return self.base_path.removeprefix(PVC_SCHEME).partition("/")[0]

    @property
    def path_in_claim(self) -> str:
        """PATH of a pvc://CLAIM/PATH base path (empty for the claim's root)."""
        return self.base_path.removeprefix(PVC_SCHEME).partition("/")[2]


# --------------------------------------------------------------------------- the pods


@dataclass(frozen=True)
class BatchingSpec:
    enabled: bool = False
    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100


@dataclass(frozen=True)
class ServerSpec:
    """spec.server: the TF Serving container, the pod count and the nodes the pods run on."""

    replicas: int = 1
    image: str | None = None  # None: the operator's --tfserving-image
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_TFSERVING_RESOURCES)
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    batching: BatchingSpec = BatchingSpec()
    # TF Serving opens its ports once it has loaded the model: until this has passed without
    # an answer since the pod started, not answering is ModelLoading, after it ServerUnavailable.
    startup_allowance_seconds: int = api.TFSERVING_STARTUP_ALLOWANCE_SECONDS


@dataclass(frozen=True)
class SidecarGrpcSpec:
    """spec.sidecar.grpc: TF Serving's gRPC API on the sidecar, or none (enabled false)."""

    enabled: bool = True
    max_message_bytes: int = api.GRPC_MAX_MESSAGE_BYTES  # either way; not max_request_bytes


@functools.cache
def default_sidecar_resources(grpc: SidecarGrpcSpec) -> Mapping[str, Any]:
    """The sidecar's resources when the spec names none: DEFAULT_SIDECAR_RESOURCES, its memory
    limit raised by GRPC_CALL_MEMORY_FACTOR gRPC messages while gRPC is on, so that one call
    of the largest message the sidecar accepts does not get it OOM-killed."""
    if not grpc.enabled:
        return DEFAULT_SIDECAR_RESOURCES
    base = quantity_bytes(DEFAULT_SIDECAR_RESOURCES["limits"]["memory"])
    limit = base + GRPC_CALL_MEMORY_FACTOR * grpc.max_message_bytes
    return {**DEFAULT_SIDECAR_RESOURCES, "limits": {"memory": f"{-(-limit // 2**20)}Mi"}}


@dataclass(frozen=True)
class SidecarSpec:
    resources: Mapping[str, Any] = field(
        default_factory=lambda: default_sidecar_resources(SidecarGrpcSpec())
    )
    timeout_seconds: float = 60.0
    max_request_bytes: int = 10 * 1024 * 1024
    grpc: SidecarGrpcSpec = SidecarGrpcSpec()


# --------------------------------------------------------------------------- the inference log


@dataclass(frozen=True)
class SamplingSpec:
    success_rate: float | None = None  # None: the operator's --log-success-sample-rate
    error_rate: float | None = None  # None: --log-error-sample-rate


@dataclass(frozen=True)
class PayloadsSpec:
    max_bytes: int | None = None  # None: --log-max-payload-bytes (0 is a limit said: none)
    oversize: str | None = None  # None: --log-oversize-payload
    non_json: str | None = None  # None: --log-non-json-payload, else the sidecar's rule


@dataclass(frozen=True)
class RedactRuleSpec:
    path: str
    action: str = "mask"
    payload: str = "both"


@dataclass(frozen=True)
class KafkaSpec:
    topic: str | None = None  # None: NAMESPACE.NAME.inference; else NAMESPACE.* (policy)
    bootstrap_servers: str | None = None  # None: --kafka-bootstrap-servers
    partitions: int = 1
    replication_factor: int = 1
    # spec.logging.kafka.security; None: the operator's --kafka-security
    security: KafkaSecuritySpec | None = None
    # spec.logging.kafka.schemaRegistry; None: plain Avro values, as the seed wrote them
    schema_registry: SchemaRegistrySpec | None = None


@dataclass(frozen=True)
class SpoolSpec:
    size: str | int = "1Gi"  # a quantity, as written
    claim_name: str | None = None  # a PersistentVolumeClaim instead of an emptyDir
    fsync_interval_seconds: float = api.SPOOL_FSYNC_INTERVAL_SECONDS  # what a power loss can lose

    @property
    def size_bytes(self) -> int:
        return quantity_bytes(self.size)


@dataclass(frozen=True)
class LoggingSpec:
    """spec.logging. Where it is silent the operator's settings apply, field by field."""

    enabled: bool = True
    mode: str | None = None  # None: --log-mode
    durability: str | None = None  # None: --log-durability
    sampling: SamplingSpec = SamplingSpec()
    payloads: PayloadsSpec = PayloadsSpec()
    # None: the operator's --log-redact rules; a list (even empty) replaces them as a whole.
    redact: tuple[RedactRuleSpec, ...] | None = None
    kafka: KafkaSpec = KafkaSpec()
    spool: SpoolSpec = SpoolSpec()
    # How long a stopping pod waits for Kafka to take what its spool holds; the pod's grace
    # period grows with it (modelserving.api.termination_grace_seconds).
    drain_timeout_seconds: int = api.LOG_DRAIN_SECONDS


# --------------------------------------------------------------------------- access


@dataclass(frozen=True)
class ApiKeysSpec:
    secret_name: str | None = None


@dataclass(frozen=True)
class KubernetesAuthSpec:
    audience: str = ""  # empty: the API server's default audience


@dataclass(frozen=True)
class AuthSpec:
    mode: str = "apiKey"  # apiKey, kubernetes or none
    api_keys: ApiKeysSpec = ApiKeysSpec()
    kubernetes: KubernetesAuthSpec = KubernetesAuthSpec()


@dataclass(frozen=True)
class ServiceSpec:
    port: int = api.SIDECAR_PORT


@dataclass(frozen=True)
class IngressTlsSpec:
    secret_name: str


@dataclass(frozen=True)
class IngressSpec:
    enabled: bool = False
    host: str | None = None
    class_name: str | None = None
    tls: IngressTlsSpec | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool = False
    metric: str = "cpu"  # or "concurrency": the operator's own autoscaler (autoscaling/)
    min_replicas: int = 1
    max_replicas: int = 4
    target_cpu_utilization_percentage: int = 70
    target_concurrency: int = 10
    stable_window_seconds: int = 60
    panic_window_percent: int = 10
    panic_threshold_percent: int = 200
    scale_to_zero_after_seconds: int = 300

    @property
    def on_concurrency(self) -> bool:
        """The operator scales the pods itself, on the requests they hold (no HPA)."""
        return self.enabled and self.metric == "concurrency"

    @property
    def to_zero(self) -> bool:
        """The serving may go to zero pods: its endpoints are the operator's (the pods', or
        the activator's while none is ready)."""
        return self.on_concurrency and self.min_replicas == 0


@dataclass(frozen=True)
class TracingSpec:
    endpoint: str = ""  # empty: the operator's --tracing-endpoint
    ratio: float = 0.0  # calls without a caller's trace context that start one


# --------------------------------------------------------------------------- the serving


@dataclass(frozen=True)
class ServingSpec:
    """A ModelServing: its identity (metadata) and its spec, with defaults applied."""

    name: str
    namespace: str
    uid: str
    model: ModelSpec
    auth: AuthSpec = AuthSpec()
    project_id: int | None = None  # also answer the Hopsworks-style paths of this project
    server: ServerSpec = field(default_factory=ServerSpec)
    sidecar: SidecarSpec = field(default_factory=SidecarSpec)
    logging: LoggingSpec = LoggingSpec()
    service: ServiceSpec = ServiceSpec()
    ingress: IngressSpec = field(default_factory=IngressSpec)
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    tracing: TracingSpec = TracingSpec()

    @classmethod
    def from_body(cls, body: Raw) -> ServingSpec:
        """Parse a ModelServing as the API server returns it (or as written: the defaults
        the API server would add are applied here too)."""
        metadata = body["metadata"]
        spec = body.get("spec") or {}
        project = spec.get("projectId")
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata.get("uid", ""),
            model=_model(_section(spec, "model"), metadata["name"]),
            auth=_auth(_section(spec, "auth")),
            project_id=int(project) if project else None,
            server=_server(_section(spec, "server")),
            sidecar=_sidecar(_section(spec, "sidecar")),
            logging=_logging(_section(spec, "logging")),
            service=ServiceSpec(**_given(_section(spec, "service"), {"port": int})),
            ingress=_ingress(_section(spec, "ingress")),
            autoscaling=AutoscalingSpec(**_given(_section(spec, "autoscaling"), _AUTOSCALING)),
            tracing=TracingSpec(
                **_given(_section(spec, "tracing"), {"endpoint": str, "ratio": float})
            ),
        )

    @property
    def endpoint(self) -> str:
        """The in-cluster URL of the :predict path."""
        host = f"{self.name}.{self.namespace}.svc"
        return f"http://{host}:{self.service.port}/v1/models/{self.model.name}:predict"

    @property
    def topic(self) -> str:
        return self.logging.kafka.topic or f"{self.namespace}.{self.name}.inference"

    def tracing_endpoint(self, settings: OperatorSettings) -> str:
        """spec.tracing.endpoint, else the operator's --tracing-endpoint ("": no spans)."""
        return self.tracing.endpoint or settings.tracing_endpoint

    def bootstrap_servers(self, settings: OperatorSettings) -> str:
        return self.logging.kafka.bootstrap_servers or settings.kafka_bootstrap_servers

    def kafka_security(self, settings: OperatorSettings) -> KafkaSecuritySpec:
        """spec.logging.kafka.security, else the operator's --kafka-security (as a whole)."""
        return self.logging.kafka.security or settings.kafka_security

    def schema_registry(self, settings: OperatorSettings) -> SchemaRegistrySpec | None:
        """spec.logging.kafka.schemaRegistry, else the operator's --schema-registry (as a
        whole); None: plain Avro values."""
        return self.logging.kafka.schema_registry or settings.schema_registry

    def logging_mode(self, settings: OperatorSettings) -> str:
        """spec.logging.mode, else the operator's --log-mode."""
        return self.logging.mode or settings.log_mode

    def logging_requested(self, settings: OperatorSettings) -> bool:
        """The spec (or the operator's default mode) asks for an inference log; it may still
        lack brokers to send it to."""
        return self.logging.enabled and self.logging_mode(settings) != "NONE"

    def ingress_refusal(self, settings: OperatorSettings) -> str | None:
        """Why the Ingress asked for is not made (an annotation the operator's
        --ingress-allowed-annotations refuses), or None."""
        if not self.ingress.enabled:
            return None
        return ingress_refusal(self.ingress.annotations, settings.ingress_allowed_annotations)

    def spool_claim_refusal(self) -> str | None:
        """Why the spool's claim cannot serve every pod asked for (a serving made before the
        CRD refused it), or None."""
        scaling = self.autoscaling
        most = scaling.max_replicas if scaling.enabled else self.server.replicas
        return spool_claim_refusal(self.logging.spool.claim_name, most)

    def topic_refusal(self, settings: OperatorSettings) -> str | None:
        """Why the topic the spec names is not logged to (not of the serving's namespace, and
        the operator's --any-kafka-topic is off), or None."""
        return topic_refusal(self.namespace, self.logging.kafka.topic, settings.any_kafka_topic)

    def logging_on(self, settings: OperatorSettings) -> bool:
        """The sidecars log: asked for, with brokers, to a topic the operator allows."""
        return (
            self.logging_requested(settings)
            and bool(self.bootstrap_servers(settings))
            and self.topic_refusal(settings) is None
        )


# --------------------------------------------------------------------------- parsing
# A key that is absent or null takes the field's default; the CRD has checked the rest.
# Each table maps a section's keys to the conversion of their values.
Converters = dict[str, Callable[[Any], Any]]

_SERVER: Converters = {
    "replicas": int,
    "imagePullPolicy": str,
    "args": tuple,
    "env": tuple,
    "envFrom": tuple,
    "nodeSelector": dict,
    "tolerations": tuple,
    "startupAllowanceSeconds": int,
}
_BATCHING: Converters = {
    "enabled": bool,
    "maxBatchSize": int,
    "batchTimeoutMicros": int,
    "numBatchThreads": int,
    "maxEnqueuedBatches": int,
}
_SIDECAR: Converters = {"timeoutSeconds": float, "maxRequestBytes": int}
_SIDECAR_GRPC: Converters = {"enabled": bool, "maxMessageBytes": int}
_LOGGING: Converters = {"enabled": bool, "mode": str, "durability": str, "drainTimeoutSeconds": int}
_SAMPLING: Converters = {"successRate": float, "errorRate": float}
_PAYLOADS: Converters = {"maxBytes": int, "oversize": str, "nonJson": str}
_REDACT_RULE: Converters = {"action": str, "payload": str}
_KAFKA: Converters = {
    "topic": str,
    "bootstrapServers": str,
    "partitions": int,
    "replicationFactor": int,
}
_SPOOL: Converters = {
    "size": lambda quantity: quantity,
    "claimName": str,
    "fsyncIntervalSeconds": float,
}  # the size kept as written
_INGRESS: Converters = {"enabled": bool, "host": str, "className": str, "annotations": dict}
_AUTOSCALING: Converters = {
    "enabled": bool,
    "metric": str,
    "minReplicas": int,
    "maxReplicas": int,
    "targetCPUUtilizationPercentage": int,
    "targetConcurrency": int,
    "stableWindowSeconds": int,
    "panicWindowPercent": int,
    "panicThresholdPercent": int,
    "scaleToZeroAfterSeconds": int,
}

_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def field_name(key: str) -> str:
    """The dataclass field of a CRD key: maxBatchSize -> max_batch_size,
    targetCPUUtilizationPercentage -> target_cpu_utilization_percentage."""
    return _WORD_START.sub("_", key).lower()


def _section(raw: Raw, key: str) -> Raw:
    return raw.get(key) or {}


def _given(raw: Raw, converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """The keys of `raw` that are set, converted, under their field names."""
    return {
        field_name(key): convert(raw[key])
        for key, convert in converters.items()
        if raw.get(key) is not None
    }


def _model(raw: Raw, serving_name: str) -> ModelSpec:
    if raw.get("basePath") is None:
        raise SpecError("spec.model.basePath is required")
    listed = bool(raw.get("versions"))
    if listed:
        versions = tuple(
            ModelVersion(int(v["version"]), int(v["weight"]), tuple(v.get("labels") or ()))
            for v in raw["versions"]
        )
    elif raw.get("version") is not None:
        versions = (ModelVersion(int(raw["version"])),)
    else:
        raise SpecError("spec.model.version (or spec.model.versions) is required")
    shadow = raw.get("shadow")
    sticky = _section(raw, "sticky")
    return ModelSpec(
        name=raw.get("name") or serving_name,
        base_path=raw["basePath"],
        versions=versions,
        shadow=(
            ShadowSpec(
                int(shadow["version"]), int(shadow["percent"]), tuple(shadow.get("labels") or ())
            )
            if shadow
            else None
        ),
        sticky=StickySpec(**_given(sticky, {"by": str, "header": str})),
        listed=listed,
    )


def _server(raw: Raw) -> ServerSpec:
    fields = _given(raw, _SERVER)
    if raw.get("image"):  # empty names no image: the operator's applies
        fields["image"] = raw["image"]
    if raw.get("resources"):  # {} asks for nothing: the defaults apply
        fields["resources"] = raw["resources"]
    batching = BatchingSpec(**_given(_section(raw, "batching"), _BATCHING))
    return ServerSpec(**fields, batching=batching)


def _sidecar(raw: Raw) -> SidecarSpec:
    fields = _given(raw, _SIDECAR)
    grpc = SidecarGrpcSpec(**_given(_section(raw, "grpc"), _SIDECAR_GRPC))
    fields["resources"] = raw.get("resources") or default_sidecar_resources(grpc)
    return SidecarSpec(**fields, grpc=grpc)


def _logging(raw: Raw) -> LoggingSpec:
    redact = None
    if "redact" in raw:
        redact = tuple(
            RedactRuleSpec(rule["path"], **_given(rule, _REDACT_RULE))
            for rule in raw["redact"] or []
        )
    return LoggingSpec(
        **_given(raw, _LOGGING),
        sampling=SamplingSpec(**_given(_section(raw, "sampling"), _SAMPLING)),
        payloads=PayloadsSpec(**_given(_section(raw, "payloads"), _PAYLOADS)),
        redact=redact,
        kafka=_kafka(_section(raw, "kafka")),
        spool=SpoolSpec(**_given(_section(raw, "spool"), _SPOOL)),
    )


def _kafka(raw: Raw) -> KafkaSpec:
    security, registry = raw.get("security"), raw.get("schemaRegistry")
    return KafkaSpec(
        **_given(raw, _KAFKA),
        security=parse_security(security) if security else None,
        schema_registry=parse_schema_registry(registry) if registry else None,
    )


def _auth(raw: Raw) -> AuthSpec:
    return AuthSpec(
        **_given(raw, {"mode": str}),
        api_keys=ApiKeysSpec(**_given(_section(raw, "apiKeys"), {"secretName": str})),
        kubernetes=KubernetesAuthSpec(**_given(_section(raw, "kubernetes"), {"audience": str})),
    )


def _ingress(raw: Raw) -> IngressSpec:
    tls = raw.get("tls")
    return IngressSpec(
        **_given(raw, _INGRESS), tls=IngressTlsSpec(tls["secretName"]) if tls else None
    )
