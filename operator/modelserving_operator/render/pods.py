"""The serving's pods: the Deployment of TF Serving and the sidecar, and the autoscaler.

Pure functions of the spec and the operator's settings. The pod mounts the ConfigMaps
where their files say (render_config): those read at start are named by their content,
so a config change names new ones and rolls the pods; its template also carries their
checksum, and the checksum of the Secrets and ConfigMaps its environment reads
(env_sources), so that a change of one of them does too.
"""

from __future__ import annotations

from typing import Any

from modelserving import api
from modelserving.kube_access import SERVICE_ACCOUNT_DIR
from modelserving_operator.kafka.schema_registry import registry_mounts, registry_volumes
from modelserving_operator.kafka.security import sidecar_mounts, sidecar_volumes
from modelserving_operator.names import (
    CONFIG_CHECKSUM_ANNOTATION,
    SECRETS_CHECKSUM_ANNOTATION,
    Manifest,
    labels,
    metadata,
    selector_labels,
    service_account_name,
)
from modelserving_operator.render.config_maps import (
    BATCHING_CONFIG_KEY,
    MODELS_CONFIG_KEY,
    PVC_MOUNT,
    ROUTING_DIR,
    ROUTING_KEY,
    SIDECAR_CONFIG_KEY,
    TFSERVING_CONFIG_DIR,
    config_checksum,
)
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.config import AuthConfig, LoggingConfig

RUN_AS_USER = 10001
# The sidecar's credentials to the API server, in the sidecar alone: what the kubelet would
# mount in every container when the pod automounts its ServiceAccount's token (the token,
# the cluster's CA, the namespace), where in-cluster clients look for them.
API_ACCESS_VOLUME = "kube-api-access"
# The token's life, as the kubelet's own automount asks for it (the kubelet renews the file at
# 80% of it, and the sidecar reads it again every minute: kube_access).
TOKEN_EXPIRATION_SECONDS = 3607


def _tfserving_container(spec: ServingSpec, settings: OperatorSettings) -> dict[str, Any]:
    server = spec.server
    args = [
        f"--port={api.TFSERVING_GRPC_PORT}",
        f"--rest_api_port={api.TFSERVING_REST_PORT}",
        f"--model_config_file={TFSERVING_CONFIG_DIR}/{MODELS_CONFIG_KEY}",
    ]
    if spec.model.listed:  # versions added or removed load and unload without a restart
        args.append(f"--model_config_file_poll_wait_seconds={api.TFSERVING_CONFIG_POLL_SECONDS}")
    if server.batching.enabled:
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={TFSERVING_CONFIG_DIR}/{BATCHING_CONFIG_KEY}",
        ]
    mounts = [
        {"name": "tfserving-config", "mountPath": TFSERVING_CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.model.claim_name is not None:
        mounts.append({"name": "model", "mountPath": PVC_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": api.TFSERVING_CONTAINER,
        "image": server.image or settings.tfserving_image,
        "imagePullPolicy": server.image_pull_policy,
        "args": args + list(server.args),
        # Named so the NetworkPolicy's intent is legible; only the sidecar reaches them.
        "ports": [
            {"name": "tfs-grpc", "containerPort": api.TFSERVING_GRPC_PORT, "protocol": "TCP"},
            {"name": "tfs-rest", "containerPort": api.TFSERVING_REST_PORT, "protocol": "TCP"},
        ],
        "resources": server.resources,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
        # TF Serving's SIGTERM waits until the sidecar forwards nothing more (its delay, then
        # its requests in flight): the kubelet signals both containers at once otherwise, and
        # TF Serving would stop under requests the sidecar still takes (modelserving.api).
        "lifecycle": {"preStop": {"sleep": {"seconds": api.TFSERVING_STOP_AFTER_SECONDS}}},
    }
    if server.env:
        container["env"] = list(server.env)
    if server.env_from:
        container["envFrom"] = list(server.env_from)
    return container


def _sidecar_container(spec: ServingSpec, settings: OperatorSettings) -> dict[str, Any]:
    mounts = [
        {
            "name": "sidecar-config",
            "mountPath": api.SIDECAR_CONFIG_FILE,
            "subPath": SIDECAR_CONFIG_KEY,
            "readOnly": True,
        },
        _routing_mount(spec),
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "spool", "mountPath": LoggingConfig.spool_dir},
        {"name": API_ACCESS_VOLUME, "mountPath": str(SERVICE_ACCOUNT_DIR), "readOnly": True},
    ]
    if spec.auth.mode == "apiKey":
        mounts.append({"name": "apikeys", "mountPath": AuthConfig.api_keys_dir, "readOnly": True})
    if spec.logging_on(settings):
        mounts += sidecar_mounts(spec.kafka_security(settings))
        if (registry := spec.schema_registry(settings)) is not None:
            mounts += registry_mounts(registry)
    # The pod the sidecar publishes its model report and its log's health on.
    env = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.{field}"}}}
        for name, field in (("POD_NAME", "name"), ("POD_NAMESPACE", "namespace"))
    ]
    return {
        "name": api.SIDECAR_CONTAINER,
        "env": env,
        "image": settings.sidecar_image,
        "imagePullPolicy": spec.server.image_pull_policy,
        "command": [
            "modelserving",
            "sidecar",
            "--config",
            api.SIDECAR_CONFIG_FILE,
            "--routing",
            api.SIDECAR_ROUTING_FILE,
            f"--shutdown-delay={api.SHUTDOWN_DELAY_SECONDS}",
        ],
        "ports": _sidecar_ports(spec),
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": spec.sidecar.resources,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _sidecar_ports(spec: ServingSpec) -> list[dict[str, Any]]:
    ports = [{"name": "http", "containerPort": api.SIDECAR_PORT, "protocol": "TCP"}]
    if spec.sidecar.grpc.enabled:
        ports.append({"name": "grpc", "containerPort": api.SIDECAR_GRPC_PORT, "protocol": "TCP"})
    return ports


def _routing_mount(spec: ServingSpec) -> dict[str, Any]:
    """Where the sidecar finds routing.yaml. Listed versions: a directory, which the kubelet
    updates in place when the ConfigMap changes, and the sidecar re-reads it. One version
    written the old way: a subPath, read once, as the rest of the pod's files are."""
    if spec.model.listed:
        return {"name": "sidecar-routing", "mountPath": ROUTING_DIR, "readOnly": True}
    return {
        "name": "sidecar-config",
        "mountPath": api.SIDECAR_ROUTING_FILE,
        "subPath": ROUTING_KEY,
        "readOnly": True,
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _api_access_volume() -> dict[str, Any]:
    """The files of an automounted ServiceAccount token, as a volume the sidecar alone mounts."""
    namespace = {
        "path": "namespace",
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    }
    return {
        "name": API_ACCESS_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "path": "token",
                        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                    }
                },
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {"downwardAPI": {"items": [namespace]}},
            ]
        },
    }


def _holding(configmaps: list[Manifest], key: str) -> str:
    """The name of the ConfigMap that holds a file (render_config names them by content)."""
    return str(next(cm["metadata"]["name"] for cm in configmaps if key in cm["data"]))


def _tfserving_config_volume(spec: ServingSpec, configmaps: list[Manifest]) -> dict[str, Any]:
    """TF Serving's files in one directory. A serving that lists versions: batching.config from
    the content-named ConfigMap, models.config from the versions one, which the kubelet keeps
    up to date and TF Serving polls; otherwise both as they were when the pod started."""
    read_once = _holding(configmaps, BATCHING_CONFIG_KEY)
    if not spec.model.listed:
        return {"name": "tfserving-config", "configMap": {"name": read_once}}
    sources = [
        {"configMap": {"name": _holding(configmaps, key), "items": [{"key": key, "path": key}]}}
        for key in (BATCHING_CONFIG_KEY, MODELS_CONFIG_KEY)
    ]
    return {"name": "tfserving-config", "projected": {"sources": sources}}


def _volumes(
    spec: ServingSpec, settings: OperatorSettings, configmaps: list[Manifest]
) -> list[dict[str, Any]]:
    spool = spec.logging.spool
    volumes: list[dict[str, Any]] = [
        _tfserving_config_volume(spec, configmaps),
        {"name": "sidecar-config", "configMap": {"name": _holding(configmaps, SIDECAR_CONFIG_KEY)}},
        {"name": "tmp", "emptyDir": {}},
        (
            {"name": "spool", "persistentVolumeClaim": {"claimName": spool.claim_name}}
            if spool.claim_name
            else {"name": "spool", "emptyDir": {"sizeLimit": str(spool.size)}}
        ),
        _api_access_volume(),
    ]
    if spec.auth.mode == "apiKey":
        secret = spec.auth.api_keys.secret_name
        volumes.append({"name": "apikeys", "secret": {"secretName": secret}})
    if spec.model.listed:  # routing.yaml alone, in a directory the kubelet keeps up to date
        items = [{"key": ROUTING_KEY, "path": ROUTING_KEY}]
        volumes.append(
            {
                "name": "sidecar-routing",
                "configMap": {"name": _holding(configmaps, ROUTING_KEY), "items": items},
            }
        )
    if spec.logging_on(settings):  # the Secrets of the log's Kafka connection, as files
        volumes += sidecar_volumes(spec.kafka_security(settings))
        if (registry := spec.schema_registry(settings)) is not None:
            volumes += registry_volumes(registry)
    claim = spec.model.claim_name
    if claim is not None:
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    return volumes


def render_deployment(
    spec: ServingSpec,
    settings: OperatorSettings,
    configmaps: list[Manifest],
    secrets_checksum: str | None = None,
) -> Manifest:
    pod_spec: dict[str, Any] = {
        # Not in every container: TF Serving (and whatever model code it runs) gets no token of
        # the sidecar's account; the sidecar mounts one (API_ACCESS_VOLUME).
        "automountServiceAccountToken": False,
        "serviceAccountName": service_account_name(spec),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The sidecar's shutdown phases, its log's drain as the serving sets it, then time to
        # save the spool's ledger (modelserving.api).
        "terminationGracePeriodSeconds": api.termination_grace_seconds(
            spec.logging.drain_timeout_seconds
        ),
        "containers": [
            _tfserving_container(spec, settings),
            _sidecar_container(spec, settings),
        ],
        "volumes": _volumes(spec, settings, configmaps),
    }
    if spec.server.node_selector:
        pod_spec["nodeSelector"] = dict(spec.server.node_selector)
    if spec.server.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.server.tolerations]
    annotations = {CONFIG_CHECKSUM_ANNOTATION: config_checksum(spec, configmaps)}
    if secrets_checksum is not None:
        annotations[SECRETS_CHECKSUM_ANNOTATION] = secrets_checksum
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(spec)},
        "revisionHistoryLimit": 3,
        "strategy": _strategy(spec),
        "template": {
            "metadata": {
                "labels": labels(spec),
                "annotations": annotations,
            },
            "spec": pod_spec,
        },
    }
    # With autoscaling the replica count is the HPA's, or on concurrency the operator's own
    # autoscaler's (written to the scale subresource, under a field manager of its own): an
    # apply that named it would fight them.
    if not spec.autoscaling.enabled:
        deployment_spec["replicas"] = spec.server.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(spec, spec.name),
        "spec": deployment_spec,
    }


def _strategy(spec: ServingSpec) -> dict[str, Any]:
    """Never fewer pods than asked during a rollout: a new version must not cost availability.
    A spool on a claim is the one exception: one pod at a time (the CRD allows it one replica),
    the old one drained and gone before the new one opens the spool. A surge pod would find the
    claim held (ReadWriteOnce on another node: the roll stalls) or share the spool with the
    pod still draining it (the spool's lock makes it wait its turn by failing until then)."""
    if spec.logging.spool.claim_name:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def render_hpa(spec: ServingSpec) -> Manifest:
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, spec.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }
