"""The serving's ConfigMaps: TF Serving's model and batching files, and the sidecar's settings.

Pure functions of the spec and the operator's settings. The sidecar's file is in the
format of modelserving_sidecar.config (its tests parse what these return), and where
the spec's logging is silent the operator's settings fill in, field by field. What pods
read at start is in ConfigMaps named by their content and immutable (`_content_named`);
what a serving that lists versions moves traffic with is in one changed in place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

import yaml

from modelserving import api
from modelserving.kafka_security.config_file import to_mapping
from modelserving.split_buckets import is_table_of, laid_end_to_end, moved_least
from modelserving_operator.kafka.schema_registry import sidecar_registry
from modelserving_operator.kafka.security import sidecar_security
from modelserving_operator.names import (
    Manifest,
    metadata,
    sidecar_configmap_name,
    tfserving_configmap_name,
    versions_configmap_name,
)
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.config import AuthConfig, LoggingConfig

# Where the pod finds what these files name; the pod's renderer mounts them there.
SIDECAR_CONFIG_KEY = PurePosixPath(api.SIDECAR_CONFIG_FILE).name
ROUTING_KEY = PurePosixPath(api.SIDECAR_ROUTING_FILE).name
ROUTING_DIR = str(PurePosixPath(api.SIDECAR_ROUTING_FILE).parent)
TFSERVING_CONFIG_DIR = "/etc/tfserving"
MODELS_CONFIG_KEY = "models.config"
BATCHING_CONFIG_KEY = "batching.config"
PVC_MOUNT = "/mnt/models"
SPOOL_SHARE = 0.9  # of the spool volume the sidecar may fill; the rest is headroom
# Files the pods of a serving that lists versions re-read (TF Serving polls models.config, the
# sidecar routing.yaml): in the versions ConfigMap, changed in place, and left out of the
# content names and the pod template's checksum, so a change of versions or weights restarts
# no pod.
LIVE_KEYS = frozenset({MODELS_CONFIG_KEY, ROUTING_KEY})


def tfserving_base_path(spec: ServingSpec) -> str:
    """TF Serving's model_base_path: a pvc:// path as mounted in the pod, else as written."""
    if spec.model.claim_name is not None:
        return f"{PVC_MOUNT}/{spec.model.path_in_claim}".rstrip("/")
    return spec.model.base_path


def render_models_config(spec: ServingSpec) -> str:
    """TF Serving's model_config_file (text protobuf): every weighted version and the shadow.

    Labels stay out (no version_labels): TF Serving refuses a config whose label names a
    version it has not loaded yet, and the sidecar resolves labels itself."""
    versions = " ".join(f"versions: {number}" for number in spec.model.loaded_versions)
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: {json.dumps(spec.model.name)}\n"
        f"    base_path: {json.dumps(tfserving_base_path(spec))}\n"
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        f"      specific {{ {versions} }}\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def render_routing(spec: ServingSpec, previous: Sequence[int] | None = None) -> dict[str, Any]:
    """The sidecar's routing file: which version answers a request (see the sidecar's routing
    module): the weighted versions with their labels, the shadow, the sticky key, and for a
    serving that lists versions the split's bucket table, moved as little as the weights allow
    from `previous`, the table its pods route by now (modelserving.split_buckets)."""
    model = spec.model
    routing: dict[str, Any] = {
        "versions": [
            {"version": v.number, "weight": v.weight, "labels": list(v.labels)}
            for v in model.versions
        ]
    }
    if model.shadow is not None:
        shadow = model.shadow
        routing["shadow"] = {"version": shadow.number, "percent": shadow.percent}
        if shadow.labels:
            routing["shadow"]["labels"] = list(shadow.labels)
    sticky: dict[str, Any] = {"by": model.sticky.by}
    if model.sticky.by == "header":
        sticky["header"] = model.sticky.header
    routing["sticky"] = sticky
    if model.listed:
        weights = [(v.number, v.weight) for v in model.versions]
        table = moved_least(previous, weights) if previous else laid_end_to_end(weights)
        routing["buckets"] = list(table)
    return routing


def routed_buckets(routing_text: str) -> tuple[int, ...] | None:
    """The bucket table a routing file routes by: its `buckets`, else (a file an operator
    wrote before there were tables) its weights laid end to end; None if it is not one."""
    try:
        routing = yaml.load(routing_text, Loader=_YAML_LOADER)
        weights = [(int(v["version"]), int(v["weight"])) for v in routing["versions"]]
        table = routing.get("buckets") or laid_end_to_end(weights)
    except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError):
        return None
    return tuple(table) if is_table_of(table, weights) else None


def render_batching_config(spec: ServingSpec) -> str:
    """TF Serving's batching_parameters_file (text protobuf)."""
    batching = spec.server.batching
    return (
        f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {batching.batch_timeout_micros} }}\n"
        f"num_batch_threads {{ value: {batching.num_batch_threads} }}\n"
        f"max_enqueued_batches {{ value: {batching.max_enqueued_batches} }}\n"
    )


def log_policy(spec: ServingSpec, settings: OperatorSettings) -> dict[str, Any]:
    """What is logged and how payloads are shaped, as sidecar config keys: where the spec
    speaks it wins, field by field; where it is silent the operator's settings apply. A
    `redact` list in the spec (even empty) replaces the operator's rules as a whole."""
    logging = spec.logging
    if logging.redact is not None:
        rules = [{"path": r.path, "action": r.action, "payload": r.payload} for r in logging.redact]
    else:
        rules = [
            {"path": r.path, "action": r.action.value, "payload": r.target.value}
            for r in settings.log_redact
        ]
    sampling, payloads = logging.sampling, logging.payloads
    return {
        "mode": spec.logging_mode(settings),
        "durability": _said(logging.durability, settings.log_durability),
        "successSampleRate": float(_said(sampling.success_rate, settings.log_success_sample_rate)),
        "errorSampleRate": float(_said(sampling.error_rate, settings.log_error_sample_rate)),
        "maxPayloadBytes": int(_said(payloads.max_bytes, settings.log_max_payload_bytes)),
        "oversizePayload": _said(payloads.oversize, settings.log_oversize_payload),
        **_non_json_said(payloads.non_json, settings.log_non_json_payload),
        "redact": rules,
    }


def _said(spec_value: Any, setting: Any) -> Any:
    """The spec's value when it says one (0 and empty included), else the operator's."""
    return setting if spec_value is None else spec_value


def _non_json_said(spec_value: str | None, setting: str) -> dict[str, str]:
    """`nonJsonPayload` when the spec or the operator's setting says it; when neither does it
    is left out, and the sidecar decides per payload whether a redaction rule applies."""
    said = _said(spec_value, setting)
    return {"nonJsonPayload": said} if said else {}


def sampling_secret(spec: ServingSpec) -> str:
    """The serving's sampling key for its sidecars: one for all its pods (a retried request is
    sampled the same way on each), from its uid, which the API server draws at random: one who
    only calls the serving cannot work it out (one who may read its objects could, as they may
    read this ConfigMap)."""
    return hashlib.sha256(f"modelserving sampling key\0{spec.uid}".encode()).hexdigest()


def render_sidecar_config(
    spec: ServingSpec, settings: OperatorSettings, model_id: int
) -> dict[str, Any]:
    """The sidecar's settings file, in the format of modelserving_sidecar.config."""
    mode = spec.auth.mode
    config: dict[str, Any] = {
        "serving": {"name": spec.name, "namespace": spec.namespace},
        "model": {"name": spec.model.name, "version": spec.model.version, "modelId": model_id},
        "listen": {"host": "0.0.0.0", "port": api.SIDECAR_PORT},
        "upstream": {
            "url": f"http://127.0.0.1:{api.TFSERVING_REST_PORT}",
            "timeoutSeconds": float(spec.sidecar.timeout_seconds),
            "startupAllowanceSeconds": float(spec.server.startup_allowance_seconds),
        },
        "limits": {"maxRequestBytes": spec.sidecar.max_request_bytes},
        "grpc": {
            "port": api.SIDECAR_GRPC_PORT if spec.sidecar.grpc.enabled else 0,
            "upstream": f"127.0.0.1:{api.TFSERVING_GRPC_PORT}",
            "maxMessageBytes": spec.sidecar.grpc.max_message_bytes,
        },
        "auth": {"mode": mode},
        "logging": {"mode": "NONE"},
    }
    if spec.project_id:
        config["serving"]["projectId"] = spec.project_id
    if mode == "apiKey":
        config["auth"]["apiKeysDir"] = AuthConfig.api_keys_dir
    elif mode == "kubernetes":
        config["auth"]["audience"] = spec.auth.kubernetes.audience
    if spec.logging_on(settings):
        policy = log_policy(spec, settings)
        config["logging"] = {
            "mode": policy.pop("mode"),
            "topic": spec.topic,
            "bootstrapServers": spec.bootstrap_servers(settings),
            "spoolDir": LoggingConfig.spool_dir,
            "spoolMaxBytes": int(spec.logging.spool.size_bytes * SPOOL_SHARE),
            "spoolFsyncIntervalSeconds": float(spec.logging.spool.fsync_interval_seconds),
            "drainTimeoutSeconds": float(spec.logging.drain_timeout_seconds),
            "compression": settings.log_compression,
            **policy,
        }
        if spec.uid:
            config["logging"]["sampleKey"] = sampling_secret(spec)
        security = to_mapping(sidecar_security(spec.kafka_security(settings)))
        if security:
            config["logging"]["kafkaSecurity"] = security
        if (registry := spec.schema_registry(settings)) is not None:
            config["logging"]["schemaRegistry"] = sidecar_registry(registry, spec.topic)
    endpoint = spec.tracing_endpoint(settings)
    if endpoint:  # without a collector the sidecar sends no spans, whatever the ratio
        config["tracing"] = {"endpoint": endpoint, "ratio": float(spec.tracing.ratio)}
    return config


def render_tfserving_configmap(spec: ServingSpec) -> Manifest:
    """TF Serving's files as its pods read them at start: batching.config, and models.config
    unless the serving lists versions (then in the versions ConfigMap, changed in place)."""
    data = {BATCHING_CONFIG_KEY: render_batching_config(spec)}
    if not spec.model.listed:
        data = {MODELS_CONFIG_KEY: render_models_config(spec), **data}
    return _content_named(spec, tfserving_configmap_name, data)


# libyaml's dumper when PyYAML has it: the same text, four times faster (a thousand servings
# rolling out render it thousands of times).
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def render_sidecar_configmap(
    spec: ServingSpec, settings: OperatorSettings, model_id: int
) -> Manifest:
    """The sidecar's settings as its pods read them at start, and its routing file unless the
    serving lists versions (then in the versions ConfigMap, changed in place)."""
    text = yaml.dump(
        render_sidecar_config(spec, settings, model_id), Dumper=_YAML_DUMPER, sort_keys=False
    )
    data = {SIDECAR_CONFIG_KEY: text}
    if not spec.model.listed:
        data[ROUTING_KEY] = _routing_text(spec)
    return _content_named(spec, sidecar_configmap_name, data)


def render_versions_configmap(
    spec: ServingSpec, previous_buckets: Sequence[int] | None = None
) -> Manifest:
    """A serving that lists versions: the files its pods re-read (LIVE_KEYS), so that moving
    traffic between versions restarts nothing. Changed in place, shared by every pod; its
    routing file's bucket table moves as little as it can from `previous_buckets`."""
    routing = _routing_text(spec, previous_buckets)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, versions_configmap_name(spec)),
        "data": {MODELS_CONFIG_KEY: render_models_config(spec), ROUTING_KEY: routing},
    }


def render_configmaps(
    spec: ServingSpec,
    settings: OperatorSettings,
    model_id: int,
    previous_buckets: Sequence[int] | None = None,
) -> list[Manifest]:
    """Every ConfigMap of the serving: TF Serving's and the sidecar's, and the versions' when
    it lists versions (`previous_buckets`: the bucket table its pods route by now)."""
    configmaps = [
        render_tfserving_configmap(spec),
        render_sidecar_configmap(spec, settings, model_id),
    ]
    if spec.model.listed:
        configmaps.append(render_versions_configmap(spec, previous_buckets))
    return configmaps


def _routing_text(spec: ServingSpec, previous_buckets: Sequence[int] | None = None) -> str:
    routing = render_routing(spec, previous_buckets)
    return str(yaml.dump(routing, Dumper=_YAML_DUMPER, sort_keys=False))


# The hex digits of a content-named ConfigMap's digest, as many as Kustomize's
# configMapGenerator puts in a name: a clash within one serving's few names is out of reach.
CONTENT_DIGEST_LENGTH = 10


def _content_named(
    spec: ServingSpec, name: Callable[[ServingSpec, str], str], data: dict[str, str]
) -> Manifest:
    """A ConfigMap named by its content and immutable, as Kustomize's configMapGenerator makes
    them: a change of the files is a new ConfigMap, and the pod template names it, so each
    ReplicaSet's pods keep reading the files they started with (a TF Serving restarted in an
    old pod mid-roll reads the old models.config, as its sidecar still routes), and a
    Deployment is never written before the files it names exist. The reconciler deletes one
    no ReplicaSet of the serving names any more."""
    files = json.dumps(_read_once(spec, data), sort_keys=True)
    digest = hashlib.sha256(files.encode()).hexdigest()[:CONTENT_DIGEST_LENGTH]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, name(spec, digest)),
        "immutable": True,
        "data": data,
    }


def _read_once(spec: ServingSpec, files: dict[str, str]) -> dict[str, Any]:
    """The files as their pods' behaviour depends on them. A serving that lists versions
    routes by its routing file, re-read in place: the sidecar's fallback version
    (`model.version`, the first weighted one) is left out, so that moving traffic between
    versions makes no new ConfigMap and rolls nothing. Its pods keep the fallback of the
    ConfigMap as first made, which only a missing routing file would use."""
    kept: dict[str, Any] = {
        k: v for k, v in files.items() if k not in LIVE_KEYS or not spec.model.listed
    }
    if spec.model.listed and SIDECAR_CONFIG_KEY in kept:
        sidecar = yaml.load(kept[SIDECAR_CONFIG_KEY], Loader=_YAML_LOADER)
        del sidecar["model"]["version"]
        kept[SIDECAR_CONFIG_KEY] = sidecar
    return kept


def config_checksum(spec: ServingSpec, configmaps: list[Manifest]) -> str:
    """A digest of what the pods read only when they start: on the pod template, so a change
    of it rolls the pods (the content-named ConfigMaps' names, which the template names, say
    the same; the digest stays so that templates written before them keep their meaning).

    A serving that lists versions (spec.model.versions) has pods that re-read models.config
    and routing.yaml (LIVE_KEYS): those are left out, and so is the sidecar's fallback
    version, so that moving traffic between versions restarts nothing. A serving of one
    version written the old way (spec.model.version) has pods that read every file once, as
    it always had: a new version rolls them, and the old pods keep serving the old version
    until they go, never switching under their callers."""
    data = [[cm["metadata"]["name"], _read_once(spec, dict(cm["data"]))] for cm in configmaps]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
