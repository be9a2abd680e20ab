"""Turn a ModelServing into the manifests of its children, as plain dicts.

Pure functions of the resource (as the API server returns it, defaults applied)
and the operator's settings: no I/O, no kopf; the handlers apply what these return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml

from modelserving import api
from modelserving.operator.settings import OperatorSettings
from modelserving.sidecar.config import AuthConfig, LoggingConfig

Manifest = dict[str, Any]

MODEL_ID_ANNOTATION = f"{api.GROUP}/model-id"
CONFIG_CHECKSUM_ANNOTATION = f"{api.GROUP}/config-checksum"
# Cluster-scoped children (the auth ClusterRoleBinding) cannot carry an ownerReference
# to a namespaced serving, so they name their serving in these labels instead.
LABEL_SERVING_NAMESPACE = f"{api.GROUP}/serving-namespace"
LABEL_SERVING_NAME = f"{api.GROUP}/serving-name"

APP_NAME = "modelserving"
COMPONENT = "serving"
SIDECAR_CONFIG_KEY = "sidecar.yaml"
SIDECAR_CONFIG_FILE = f"/etc/modelserving/{SIDECAR_CONFIG_KEY}"
TFSERVING_CONFIG_DIR = "/etc/tfserving"
MODELS_CONFIG_KEY = "models.config"
BATCHING_CONFIG_KEY = "batching.config"
PVC_MOUNT = "/mnt/models"
RUN_AS_USER = 10001

DEFAULT_TFSERVING_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}}
DEFAULT_SIDECAR_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
}
SPOOL_SHARE = 0.9  # of the spool volume the sidecar may fill; the rest is headroom
_QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1,
}  # fmt: skip


# --------------------------------------------------------------------------- facts of a serving


def _spec(serving: Mapping[str, Any], *path: str) -> Any:
    value: Any = serving.get("spec", {})
    for key in path:
        value = (value or {}).get(key)
    return value


def serving_name(serving: Mapping[str, Any]) -> str:
    return serving["metadata"]["name"]


def serving_namespace(serving: Mapping[str, Any]) -> str:
    return serving["metadata"]["namespace"]


def model_name(serving: Mapping[str, Any]) -> str:
    """The name in the :predict paths: spec.model.name, else the serving's name."""
    return _spec(serving, "model", "name") or serving_name(serving)


def endpoint(serving: Mapping[str, Any]) -> str:
    port = _spec(serving, "service", "port") or api.SIDECAR_PORT
    host = f"{serving_name(serving)}.{serving_namespace(serving)}.svc"
    return f"http://{host}:{port}/v1/models/{model_name(serving)}:predict"


def topic(serving: Mapping[str, Any]) -> str:
    return (
        _spec(serving, "logging", "kafka", "topic")
        or f"{serving_namespace(serving)}.{serving_name(serving)}.inference"
    )


def bootstrap_servers(serving: Mapping[str, Any], settings: OperatorSettings) -> str:
    spec_servers = _spec(serving, "logging", "kafka", "bootstrapServers")
    return spec_servers or settings.kafka_bootstrap_servers


def logging_mode(serving: Mapping[str, Any], settings: OperatorSettings) -> str:
    """spec.logging.mode, else the operator's --log-mode."""
    return _spec(serving, "logging", "mode") or settings.log_mode


def logging_requested(serving: Mapping[str, Any], settings: OperatorSettings) -> bool:
    """The spec (or the operator's default mode) asks for an inference log; it may still lack
    brokers to send it to."""
    enabled = _spec(serving, "logging", "enabled")
    return enabled is not False and logging_mode(serving, settings) != "NONE"


def logging_on(serving: Mapping[str, Any], settings: OperatorSettings) -> bool:
    return logging_requested(serving, settings) and bool(bootstrap_servers(serving, settings))


def log_policy(serving: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """What is logged and how payloads are shaped, as sidecar config keys: where the spec
    speaks it wins, field by field; where it is silent the operator's settings apply. A
    `redact` list in the spec (even empty) replaces the operator's rules as a whole."""
    spec = _spec(serving, "logging") or {}
    sampling = spec.get("sampling") or {}
    payloads = spec.get("payloads") or {}
    if "redact" in spec:
        rules = [
            {
                "path": r["path"],
                "action": r.get("action", "mask"),
                "payload": r.get("payload", "both"),
            }
            for r in spec["redact"] or []
        ]
    else:
        rules = [
            {"path": r.path, "action": r.action.value, "payload": r.target.value}
            for r in settings.log_redact
        ]
    return {
        "mode": logging_mode(serving, settings),
        "successSampleRate": float(sampling.get("successRate", settings.log_success_sample_rate)),
        "errorSampleRate": float(sampling.get("errorRate", settings.log_error_sample_rate)),
        "maxPayloadBytes": int(payloads.get("maxBytes", settings.log_max_payload_bytes)),
        "oversizePayload": payloads.get("oversize", settings.log_oversize_payload),
        "nonJsonPayload": payloads.get("nonJson", settings.log_non_json_payload),
        "redact": rules,
    }


def auth_mode(serving: Mapping[str, Any]) -> str:
    return _spec(serving, "auth", "mode") or "apiKey"


def autoscaling_on(serving: Mapping[str, Any]) -> bool:
    return bool(_spec(serving, "autoscaling", "enabled"))


def quantity_bytes(quantity: str | int) -> int:
    """Bytes of a Kubernetes quantity such as 1Gi or 500M."""
    text = str(quantity).strip()
    for suffix in sorted(_QUANTITY_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix])
    return int(float(text))


def labels(serving: Mapping[str, Any]) -> dict[str, str]:
    return {
        **selector_labels(serving),
        api.LABEL_COMPONENT: COMPONENT,
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
        api.LABEL_PART_OF: api.PART_OF,
    }


def selector_labels(serving: Mapping[str, Any]) -> dict[str, str]:
    return {api.LABEL_NAME: APP_NAME, api.LABEL_INSTANCE: serving_name(serving)}


def _metadata(serving: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": serving_namespace(serving),
        "labels": labels(serving),
        "ownerReferences": [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": serving_name(serving),
                "uid": serving["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def tfserving_configmap_name(serving: Mapping[str, Any]) -> str:
    return f"{serving_name(serving)}-tfserving"


def sidecar_configmap_name(serving: Mapping[str, Any]) -> str:
    return f"{serving_name(serving)}-sidecar"


def service_account_name(serving: Mapping[str, Any]) -> str:
    return f"{serving_name(serving)}-sidecar"


def log_status_role_binding_name(serving: Mapping[str, Any]) -> str:
    return f"{serving_name(serving)}-sidecar-log-status"


def needs_service_account(serving: Mapping[str, Any], settings: OperatorSettings) -> bool:
    """The sidecar calls the API: TokenReviews (kubernetes auth), its pod's log status."""
    return auth_mode(serving) == "kubernetes" or logging_on(serving, settings)


def cluster_role_binding_name(serving: Mapping[str, Any]) -> str:
    return f"modelserving:{serving_namespace(serving)}:{serving_name(serving)}"


# --------------------------------------------------------------------------- config files


def _model_base_path(serving: Mapping[str, Any]) -> str:
    base = _spec(serving, "model", "basePath")
    if base.startswith("pvc://"):
        _, _, path = base.removeprefix("pvc://").partition("/")
        return f"{PVC_MOUNT}/{path}".rstrip("/")
    return base


def render_models_config(serving: Mapping[str, Any]) -> str:
    """TF Serving's model_config_file (text protobuf), pinned to the spec's version."""
    return (
        "model_config_list {\n"
        "  config {\n"
        f"    name: {json.dumps(model_name(serving))}\n"
        f"    base_path: {json.dumps(_model_base_path(serving))}\n"
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        f"      specific {{ versions: {int(_spec(serving, 'model', 'version'))} }}\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def render_batching_config(serving: Mapping[str, Any]) -> str:
    """TF Serving's batching_parameters_file (text protobuf)."""
    batching = _spec(serving, "server", "batching") or {}
    return (
        f"max_batch_size {{ value: {int(batching.get('maxBatchSize', 32))} }}\n"
        f"batch_timeout_micros {{ value: {int(batching.get('batchTimeoutMicros', 1000))} }}\n"
        f"num_batch_threads {{ value: {int(batching.get('numBatchThreads', 4))} }}\n"
        f"max_enqueued_batches {{ value: {int(batching.get('maxEnqueuedBatches', 100))} }}\n"
    )


def render_sidecar_config(
    serving: Mapping[str, Any], settings: OperatorSettings, model_id: int
) -> dict[str, Any]:
    """The sidecar's settings file, in the format of modelserving.sidecar.config."""
    mode = auth_mode(serving)
    max_request_bytes = int(_spec(serving, "sidecar", "maxRequestBytes") or 10 << 20)
    config: dict[str, Any] = {
        "serving": {"name": serving_name(serving), "namespace": serving_namespace(serving)},
        "model": {
            "name": model_name(serving),
            "version": int(_spec(serving, "model", "version")),
            "modelId": model_id,
        },
        "listen": {"host": "0.0.0.0", "port": api.SIDECAR_PORT},
        "upstream": {
            "url": f"http://127.0.0.1:{api.TFSERVING_REST_PORT}",
            "timeoutSeconds": float(_spec(serving, "sidecar", "timeoutSeconds") or 60),
        },
        "limits": {"maxRequestBytes": max_request_bytes},
        "auth": {"mode": mode},
        "logging": {"mode": "NONE"},
    }
    if _spec(serving, "projectId"):
        config["serving"]["projectId"] = int(_spec(serving, "projectId"))
    if mode == "apiKey":
        config["auth"]["apiKeysDir"] = AuthConfig.api_keys_dir
    elif mode == "kubernetes":
        config["auth"]["audience"] = _spec(serving, "auth", "kubernetes", "audience") or ""
    if logging_on(serving, settings):
        policy = log_policy(serving, settings)
        config["logging"] = {
            "mode": policy.pop("mode"),
            "topic": topic(serving),
            "bootstrapServers": bootstrap_servers(serving, settings),
            "spoolDir": LoggingConfig.spool_dir,
            "spoolMaxBytes": int(quantity_bytes(_spool(serving)["size"]) * SPOOL_SHARE),
            **policy,
        }
    return config


def _spool(serving: Mapping[str, Any]) -> dict[str, Any]:
    return {"size": "1Gi", **(_spec(serving, "logging", "spool") or {})}


# --------------------------------------------------------------------------- children


def render_tfserving_configmap(serving: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(serving, tfserving_configmap_name(serving)),
        "data": {
            MODELS_CONFIG_KEY: render_models_config(serving),
            BATCHING_CONFIG_KEY: render_batching_config(serving),
        },
    }


# libyaml's dumper when PyYAML has it: the same text, four times faster (a thousand servings
# rolling out render it thousands of times).
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render_sidecar_configmap(
    serving: Mapping[str, Any], settings: OperatorSettings, model_id: int
) -> Manifest:
    text = yaml.dump(
        render_sidecar_config(serving, settings, model_id), Dumper=_YAML_DUMPER, sort_keys=False
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(serving, sidecar_configmap_name(serving)),
        "data": {SIDECAR_CONFIG_KEY: text},
    }


def config_checksum(configmaps: list[Manifest]) -> str:
    """A digest of the ConfigMaps' data: on the pod template, so a config change rolls out."""
    data = [[cm["metadata"]["name"], cm["data"]] for cm in configmaps]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def _tfserving_container(serving: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    server = _spec(serving, "server") or {}
    args = [
        f"--port={api.TFSERVING_GRPC_PORT}",
        f"--rest_api_port={api.TFSERVING_REST_PORT}",
        f"--model_config_file={TFSERVING_CONFIG_DIR}/{MODELS_CONFIG_KEY}",
    ]
    if (server.get("batching") or {}).get("enabled"):
        args += [
            "--enable_batching=true",
            f"--batching_parameters_file={TFSERVING_CONFIG_DIR}/{BATCHING_CONFIG_KEY}",
        ]
    mounts = [
        {"name": "tfserving-config", "mountPath": TFSERVING_CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if _spec(serving, "model", "basePath").startswith("pvc://"):
        mounts.append({"name": "model", "mountPath": PVC_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": api.TFSERVING_CONTAINER,
        "image": server.get("image") or settings.tfserving_image,
        "imagePullPolicy": server.get("imagePullPolicy") or "IfNotPresent",
        "args": args + list(server.get("args") or []),
        # Named so the NetworkPolicy's intent is legible; only the sidecar reaches them.
        "ports": [
            {"name": "tfs-grpc", "containerPort": api.TFSERVING_GRPC_PORT, "protocol": "TCP"},
            {"name": "tfs-rest", "containerPort": api.TFSERVING_REST_PORT, "protocol": "TCP"},
        ],
        "resources": server.get("resources") or DEFAULT_TFSERVING_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }
    if server.get("env"):
        container["env"] = list(server["env"])
    return container


def _sidecar_container(serving: Mapping[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    mounts = [
        {
            "name": "sidecar-config",
            "mountPath": SIDECAR_CONFIG_FILE,
            "subPath": SIDECAR_CONFIG_KEY,
            "readOnly": True,
        },
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "spool", "mountPath": LoggingConfig.spool_dir},
    ]
    if auth_mode(serving) == "apiKey":
        mounts.append({"name": "apikeys", "mountPath": AuthConfig.api_keys_dir, "readOnly": True})
    env = []
    if logging_on(serving, settings):  # the pod the sidecar publishes its log's health on
        env = [
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.{field}"}}}
            for name, field in (("POD_NAME", "name"), ("POD_NAMESPACE", "namespace"))
        ]
    return {
        "name": api.SIDECAR_CONTAINER,
        **({"env": env} if env else {}),
        "image": settings.sidecar_image,
        "imagePullPolicy": _spec(serving, "server", "imagePullPolicy") or "IfNotPresent",
        "command": ["modelserving", "sidecar", "--config", SIDECAR_CONFIG_FILE],
        "ports": [{"name": "http", "containerPort": api.SIDECAR_PORT, "protocol": "TCP"}],
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
        "resources": _spec(serving, "sidecar", "resources") or DEFAULT_SIDECAR_RESOURCES,
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _volumes(serving: Mapping[str, Any]) -> list[dict[str, Any]]:
    spool = _spool(serving)
    volumes: list[dict[str, Any]] = [
        {"name": "tfserving-config", "configMap": {"name": tfserving_configmap_name(serving)}},
        {"name": "sidecar-config", "configMap": {"name": sidecar_configmap_name(serving)}},
        {"name": "tmp", "emptyDir": {}},
        (
            {"name": "spool", "persistentVolumeClaim": {"claimName": spool["claimName"]}}
            if spool.get("claimName")
            else {"name": "spool", "emptyDir": {"sizeLimit": str(spool["size"])}}
        ),
    ]
    if auth_mode(serving) == "apiKey":
        secret = _spec(serving, "auth", "apiKeys", "secretName")
        volumes.append({"name": "apikeys", "secret": {"secretName": secret}})
    base = _spec(serving, "model", "basePath")
    if base.startswith("pvc://"):
        claim = base.removeprefix("pvc://").partition("/")[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    return volumes


def render_deployment(
    serving: Mapping[str, Any], settings: OperatorSettings, configmaps: list[Manifest]
) -> Manifest:
    own_account = needs_service_account(serving, settings)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": own_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Long enough for the sidecar to drain the inference log on SIGTERM.
        "terminationGracePeriodSeconds": 60,
        "containers": [
            _tfserving_container(serving, settings),
            _sidecar_container(serving, settings),
        ],
        "volumes": _volumes(serving),
    }
    if own_account:
        pod_spec["serviceAccountName"] = service_account_name(serving)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(serving)},
        "revisionHistoryLimit": 3,
        # Never fewer pods than asked during a rollout: a new version must not cost availability.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {
            "metadata": {
                "labels": labels(serving),
                "annotations": {CONFIG_CHECKSUM_ANNOTATION: config_checksum(configmaps)},
            },
            "spec": pod_spec,
        },
    }
    if not autoscaling_on(serving):  # the HPA owns the replica count when autoscaling is on
        replicas = _spec(serving, "server", "replicas")
        spec["replicas"] = 1 if replicas is None else int(replicas)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(serving, serving_name(serving)),
        "spec": spec,
    }


def render_service(serving: Mapping[str, Any]) -> Manifest:
    port = _spec(serving, "service", "port") or api.SIDECAR_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(serving, serving_name(serving)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(serving),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_network_policy(serving: Mapping[str, Any]) -> Manifest:
    """Only the sidecar's port is open to other pods; TF Serving answers inside the pod only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(serving, serving_name(serving)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(serving)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": api.SIDECAR_PORT}]}],
        },
    }


def ingress_paths(serving: Mapping[str, Any]) -> list[str]:
    model = model_name(serving)
    paths = [f"/v1/models/{model}"]
    project = _spec(serving, "projectId")
    if project:
        paths += [
            f"/hopsworks-api/api/project/{project}/models/{model}",
            f"/hopsworks-api/api/project/{project}/inference/models/{model}",
        ]
    return paths


def render_ingress(serving: Mapping[str, Any]) -> Manifest:
    ingress = _spec(serving, "ingress") or {}
    port = _spec(serving, "service", "port") or api.SIDECAR_PORT
    backend = {"service": {"name": serving_name(serving), "port": {"number": port}}}
    # ImplementationSpecific: a Prefix path would not match /v1/models/NAME:predict, whose
    # last segment is "NAME:predict"; controllers treat these as string prefixes.
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {"path": p, "pathType": "ImplementationSpecific", "backend": backend}
                for p in ingress_paths(serving)
            ]
        }
    }
    if ingress.get("host"):
        rule = {"host": ingress["host"], **rule}
    metadata = _metadata(serving, serving_name(serving))
    if ingress.get("annotations"):
        metadata["annotations"] = dict(ingress["annotations"])
    spec: dict[str, Any] = {"rules": [rule]}
    if ingress.get("className"):
        spec["ingressClassName"] = ingress["className"]
    if ingress.get("tls"):
        spec["tls"] = [{"hosts": [ingress["host"]], "secretName": ingress["tls"]["secretName"]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def render_hpa(serving: Mapping[str, Any]) -> Manifest:
    scaling = _spec(serving, "autoscaling") or {}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(serving, serving_name(serving)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": serving_name(serving),
            },
            "minReplicas": int(scaling.get("minReplicas", 1)),
            "maxReplicas": int(scaling.get("maxReplicas", 4)),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": int(
                                scaling.get("targetCPUUtilizationPercentage", 70)
                            ),
                        },
                    },
                }
            ],
        },
    }


def render_service_account(serving: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(serving, service_account_name(serving)),
    }


def render_cluster_role_binding(serving: Mapping[str, Any], settings: OperatorSettings) -> Manifest:
    """Lets the sidecar call TokenReview and SubjectAccessReview (auth mode kubernetes)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": cluster_role_binding_name(serving),
            "labels": {
                **labels(serving),
                LABEL_SERVING_NAMESPACE: serving_namespace(serving),
                LABEL_SERVING_NAME: serving_name(serving),
            },
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": settings.sidecar_auth_cluster_role,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account_name(serving),
                "namespace": serving_namespace(serving),
            }
        ],
    }


def render_log_status_role_binding(
    serving: Mapping[str, Any], settings: OperatorSettings
) -> Manifest:
    """Lets the sidecar patch pods/status (its pod's log-status annotation) in its namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(serving, log_status_role_binding_name(serving)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": settings.sidecar_log_status_cluster_role,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_account_name(serving),
                "namespace": serving_namespace(serving),
            }
        ],
    }


def render_children(
    serving: Mapping[str, Any], settings: OperatorSettings, model_id: int
) -> list[Manifest]:
    """Every child the serving needs, in the order to apply them (configs before pods)."""
    configmaps = [
        render_tfserving_configmap(serving),
        render_sidecar_configmap(serving, settings, model_id),
    ]
    children: list[Manifest] = [*configmaps]
    if needs_service_account(serving, settings):
        children.append(render_service_account(serving))
    if auth_mode(serving) == "kubernetes":
        children.append(render_cluster_role_binding(serving, settings))
    if logging_on(serving, settings):
        children.append(render_log_status_role_binding(serving, settings))
    children += [
        render_deployment(serving, settings, configmaps),
        render_service(serving),
        render_network_policy(serving),
    ]
    if (_spec(serving, "ingress") or {}).get("enabled"):
        children.append(render_ingress(serving))
    if autoscaling_on(serving):
        children.append(render_hpa(serving))
    return children
