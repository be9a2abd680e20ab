"""Rendering a ModelServing into its children: plain dicts in, plain dicts out."""

from __future__ import annotations

import argparse
import copy

import pytest
import yaml

from modelserving import api
from modelserving.kube_access import SERVICE_ACCOUNT_DIR
from modelserving_operator.autoscaler.endpoints import pod_endpoints, ready_endpoints
from modelserving_operator.names import CONFIG_CHECKSUM_ANNOTATION
from modelserving_operator.reconcile import covers
from modelserving_operator.render.config_maps import (
    render_configmaps,
    render_sidecar_config,
    render_sidecar_configmap,
)
from modelserving_operator.render.manifests import render_children
from modelserving_operator.render.network import (
    SLICE_MANAGED_BY,
    SLICE_MANAGED_BY_LABEL,
    SLICE_SERVICE_LABEL,
    Endpoint,
    render_endpoint_slice,
    render_service,
)
from modelserving_operator.render.pods import render_deployment
from modelserving_operator.settings import (
    OperatorSettings,
    SettingsError,
    configure_parser,
    settings_from,
)
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import (
    APPLY_FAILED,
    CONFLICT,
    ApplyFailure,
    Condition,
    deployment_conditions,
    merge_conditions,
    progress_only,
)
from modelserving_sidecar.config import AuthMode, LoggingMode, UpstreamConfig, parse_config
from modelserving_sidecar.main import configure_parser as configure_sidecar_parser
from tests.support.operator_objects import SETTINGS, mnist, mnist_body


def by_kind(children: list[dict]) -> dict[str, list[dict]]:
    kinds: dict[str, list[dict]] = {}
    for child in children:
        kinds.setdefault(child["kind"], []).append(child)
    return kinds


def test_sidecar_config_is_what_the_sidecar_parses():
    cm = render_sidecar_configmap(mnist(projectId=80), SETTINGS, model_id=17)

    config = parse_config(yaml.safe_load(cm["data"]["sidecar.yaml"]))

    assert (config.serving.name, config.serving.namespace, config.serving.project_id) == (
        "mnist",
        "demo",
        80,
    )
    assert (config.model.name, config.model.version, config.model.model_id) == ("mnist", 1, 17)
    assert config.listen.port == api.SIDECAR_PORT
    assert config.upstream.url == f"http://127.0.0.1:{api.TFSERVING_REST_PORT}"
    # TF Serving's gRPC API on the sidecar's 8500, TF Serving's own gRPC port moved aside.
    assert (config.grpc.port, config.grpc.upstream) == (8500, "127.0.0.1:8510")
    assert config.auth.mode is AuthMode.API_KEY
    assert config.logging.mode is LoggingMode.ALL
    assert config.logging.topic == "demo.mnist.inference"
    assert config.logging.bootstrap_servers == "kafka:9092"  # the operator's default
    assert config.logging.spool_max_bytes == int(2**30 * 0.9)


def test_sidecar_config_without_brokers_or_with_logging_off_logs_nothing():
    off = render_sidecar_config(mnist(logging={"enabled": False}), SETTINGS, 1)
    no_brokers = render_sidecar_config(mnist(), OperatorSettings(), 1)
    assert parse_config(off).logging.mode is LoggingMode.NONE
    assert parse_config(no_brokers).logging.mode is LoggingMode.NONE


def test_the_spools_fsync_interval_is_the_specs_else_one_second():
    said = mnist(logging={"spool": {"fsyncIntervalSeconds": 0}})

    default = parse_config(render_sidecar_config(mnist(), SETTINGS, 1)).logging
    every_write = parse_config(render_sidecar_config(said, SETTINGS, 1)).logging

    assert default.spool_fsync_interval_seconds == api.SPOOL_FSYNC_INTERVAL_SECONDS == 1.0
    assert every_write.spool_fsync_interval_seconds == 0.0


def test_the_startup_allowance_is_the_specs_else_ten_minutes_for_the_sidecar_too():
    said = mnist(server={"startupAllowanceSeconds": 1800})

    default = parse_config(render_sidecar_config(mnist(), SETTINGS, 1)).upstream
    slow_model = parse_config(render_sidecar_config(said, SETTINGS, 1)).upstream

    assert default.startup_allowance_seconds == api.TFSERVING_STARTUP_ALLOWANCE_SECONDS == 600
    # a sidecar config that leaves it out (a sidecar run by hand) has the same default
    assert UpstreamConfig().startup_allowance_seconds == api.TFSERVING_STARTUP_ALLOWANCE_SECONDS
    assert slow_model.startup_allowance_seconds == 1800.0


def test_spec_brokers_and_topic_win_over_the_operator_defaults():
    serving = mnist(
        logging={"kafka": {"topic": "demo.t1", "bootstrapServers": "b:1"}, "mode": "PREDICTIONS"}
    )
    config = parse_config(render_sidecar_config(serving, SETTINGS, 1))
    assert (config.logging.topic, config.logging.bootstrap_servers) == ("demo.t1", "b:1")
    assert config.logging.mode is LoggingMode.PREDICTIONS


def test_spans_go_to_the_specs_collector_else_the_operators_else_nowhere():
    collector = "http://otel-collector.monitoring:4318/v1/traces"
    operator_default = OperatorSettings(tracing_endpoint="http://default:4318/v1/traces")
    said = mnist(tracing={"endpoint": collector, "ratio": 0.01})

    none = parse_config(render_sidecar_config(mnist(), SETTINGS, 1)).tracing
    own = parse_config(render_sidecar_config(said, SETTINGS, 1)).tracing
    defaulted = parse_config(render_sidecar_config(mnist(), operator_default, 1)).tracing
    spec_wins = parse_config(render_sidecar_config(said, operator_default, 1)).tracing

    assert (none.endpoint, none.ratio) == ("", 0.0)  # no spans; the trace context still goes on
    assert (own.endpoint, own.ratio) == (collector, 0.01)
    assert (defaulted.endpoint, defaulted.ratio) == ("http://default:4318/v1/traces", 0.0)
    assert spec_wins.endpoint == collector


def test_the_operators_collector_must_be_a_url():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    with pytest.raises(SettingsError, match="MODELSERVING_TRACING_ENDPOINT"):
        settings_from(parser.parse_args([]), {"MODELSERVING_TRACING_ENDPOINT": "collector:4318"})
    settings = settings_from(
        parser.parse_args(["--tracing-endpoint", "https://c.example/v1/traces"]), {}
    )
    assert settings.tracing_endpoint == "https://c.example/v1/traces"


def test_a_servings_pods_share_its_sampling_key_and_other_servings_have_others():
    def key(uid: str) -> str:
        body = mnist_body()
        body["metadata"]["uid"] = uid
        rendered = render_sidecar_configmap(ServingSpec.from_body(body), SETTINGS, 1)
        return parse_config(yaml.safe_load(rendered["data"]["sidecar.yaml"])).logging.sample_key

    assert key("u-1") == key("u-1")  # every render, so every pod and every rollout
    assert key("u-1") != key("u-2")
    assert "u-1" not in key("u-1")


@pytest.mark.parametrize("asked", [None, 1, 600, 3600])
def test_the_pods_shutdown_phases_fit_in_its_grace_period(asked):
    spec = mnist(logging={"drainTimeoutSeconds": asked} if asked else {})
    pod = by_kind(render_children(spec, SETTINGS, 17))["Deployment"][0]["spec"]["template"]
    tfs, sidecar = pod["spec"]["containers"]
    parser = argparse.ArgumentParser()
    configure_sidecar_parser(parser)
    args = parser.parse_args(sidecar["command"][2:])  # as the sidecar reads its command line
    drain = parse_config(render_sidecar_config(spec, SETTINGS, 17)).logging.drain_timeout_seconds
    assert drain == (asked or 20)  # the drain the serving sets is the sidecar's; else 20 s
    # Not ready, still serving, while the endpoints stop routing here; then requests in flight.
    serving = args.shutdown_delay + args.shutdown_timeout
    assert args.shutdown_delay >= 5
    # TF Serving is signalled only once the sidecar forwards nothing more...
    assert tfs["lifecycle"]["preStop"]["sleep"]["seconds"] >= serving
    # ...and the log's drain ends with time left to write the spool's ledger before SIGKILL.
    assert serving + drain + 10 <= pod["spec"]["terminationGracePeriodSeconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == drain + 40  # as the CRD says


def test_a_claimed_spool_rolls_its_one_pod_by_recreate_and_an_emptydir_by_surge():
    claimed = mnist(logging={"spool": {"claimName": "mnist-spool"}})
    deployment = render_deployment(claimed, SETTINGS, render_configmaps(claimed, SETTINGS, 17))
    # The old pod drains and goes before the new one opens the spool: never two writers.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["spool"]["persistentVolumeClaim"] == {"claimName": "mnist-spool"}

    plain = mnist()
    deployment = render_deployment(plain, SETTINGS, render_configmaps(plain, SETTINGS, 17))
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["spool"]


def test_deployment_runs_tfserving_and_the_sidecar_hardened():
    children = by_kind(render_children(mnist(), SETTINGS, 17))
    deployment = children["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    tfs, sidecar = pod["containers"]

    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert tfs["name"] == api.TFSERVING_CONTAINER
    assert tfs["image"] == SETTINGS.tfserving_image
    assert "--model_config_file=/etc/tfserving/models.config" in tfs["args"]
    assert sidecar["command"] == [
        "modelserving",
        "sidecar",
        "--config",
        "/etc/modelserving/sidecar.yaml",
        "--routing",
        "/etc/modelserving/routing/routing.yaml",
        "--shutdown-delay=5",
    ]
    # the routing file the sidecar is told to read is where a mount puts it
    assert any(
        "/etc/modelserving/routing/routing.yaml".startswith(m["mountPath"])
        for m in sidecar["volumeMounts"]
    )
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in (tfs, sidecar):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["requests"]
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts["/etc/modelserving/apikeys"] == "apikeys"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["apikeys"]["secret"]["secretName"] == "mnist-keys"
    assert volumes["spool"]["emptyDir"]["sizeLimit"] == "1Gi"
    # The sidecar publishes its model report and its log's health on its pod: its own
    # account, whether or not it logs.
    assert pod["serviceAccountName"] == "mnist-sidecar"
    off = mnist(logging={"enabled": False})
    quiet = render_deployment(off, SETTINGS, render_configmaps(off, SETTINGS, 1))
    assert quiet["spec"]["template"]["spec"]["serviceAccountName"] == "mnist-sidecar"


@pytest.mark.parametrize("auth", [{"mode": "kubernetes"}, {"mode": "none"}])
def test_the_accounts_token_is_the_sidecars_alone(auth):
    keyed = mnist(auth=auth)
    pod = render_deployment(keyed, SETTINGS, render_configmaps(keyed, SETTINGS, 1))["spec"][
        "template"
    ]["spec"]
    tfs, sidecar = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    def token_mounts(container: dict) -> list[dict]:
        return [
            m
            for m in container.get("volumeMounts", [])
            if "serviceaccount" in m["mountPath"]
            or "serviceAccountToken" in str(volumes[m["name"]])
        ]

    # The pod does not put the token in every container ...
    assert pod["automountServiceAccountToken"] is False
    # ... TF Serving has none ...
    assert token_mounts(tfs) == []
    # ... and the sidecar has what the kubelet's automount gives, where in-cluster clients look
    [mount] = token_mounts(sidecar)
    assert mount == {
        "name": "kube-api-access",
        "mountPath": str(SERVICE_ACCOUNT_DIR),
        "readOnly": True,
    }
    sources = volumes[mount["name"]]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[1]["configMap"] == {
        "name": "kube-root-ca.crt",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_a_new_version_changes_the_config_and_so_the_pod_template():
    old = render_children(mnist(), SETTINGS, 17)
    new_serving = mnist_body()
    new_serving["spec"]["model"]["version"] = 2
    new = render_children(ServingSpec.from_body(new_serving), SETTINGS, 17)

    def checksum(children):
        dep = by_kind(children)["Deployment"][0]
        return dep["spec"]["template"]["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]

    assert checksum(old) != checksum(new)
    models = by_kind(new)["ConfigMap"][0]["data"]["models.config"]
    assert "versions: 2" in models and 'base_path: "s3://models/mnist"' in models


def test_service_and_network_policy_expose_only_the_sidecar():
    children = by_kind(render_children(mnist(), SETTINGS, 17))
    service = children["Service"][0]
    policy = children["NetworkPolicy"][0]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http", "grpc"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8080, 8500]
    assert policy["spec"]["ingress"] == [
        {
            "ports": [
                {"protocol": "TCP", "port": api.SIDECAR_PORT},
                {"protocol": "TCP", "port": api.SIDECAR_GRPC_PORT},
            ]
        }
    ]
    assert mnist().endpoint == "http://mnist.demo.svc:8080/v1/models/mnist:predict"


def test_ingress_hpa_and_pvc_when_asked():
    serving = mnist_body(
        projectId=80,
        ingress={
            "enabled": True,
            "host": "m.example.com",
            "className": "nginx",
            "tls": {"secretName": "m-tls"},
        },
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5},
    )
    serving["spec"]["model"]["basePath"] = "pvc://models/mnist"
    children = by_kind(render_children(ServingSpec.from_body(serving), SETTINGS, 17))
    ingress = children["Ingress"][0]["spec"]
    paths = [p["path"] for p in ingress["rules"][0]["http"]["paths"]]
    assert paths == [
        "/v1/models/mnist",
        "/hopsworks-api/api/project/80/models/mnist",
        "/hopsworks-api/api/project/80/inference/models/mnist",
    ]
    assert ingress["tls"] == [{"hosts": ["m.example.com"], "secretName": "m-tls"}]
    assert ingress["ingressClassName"] == "nginx"
    hpa = children["HorizontalPodAutoscaler"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    deployment = children["Deployment"][0]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert 'base_path: "/mnt/models/mnist"' in children["ConfigMap"][0]["data"]["models.config"]


def test_on_concurrency_the_operator_scales_so_no_hpa_and_no_replicas_are_rendered():
    serving = mnist_body(
        autoscaling={"enabled": True, "metric": "concurrency", "minReplicas": 0, "maxReplicas": 5}
    )
    spec = ServingSpec.from_body(serving)
    children = by_kind(render_children(spec, SETTINGS, 17))
    assert "HorizontalPodAutoscaler" not in children
    assert "replicas" not in children["Deployment"][0]["spec"]  # the autoscaler's scale writes
    scaling = spec.autoscaling
    assert scaling.on_concurrency and (scaling.min_replicas, scaling.target_concurrency) == (0, 10)
    assert (scaling.stable_window_seconds, scaling.scale_to_zero_after_seconds) == (60, 300)


def test_the_pods_go_to_the_nodes_the_spec_names():
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    serving = mnist_body(server={"nodeSelector": {"pool": "gpu"}, "tolerations": [toleration]})
    pod = by_kind(render_children(ServingSpec.from_body(serving), SETTINGS, 17))["Deployment"][0]
    assert pod["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["template"]["spec"]["tolerations"] == [toleration]
    plain = by_kind(render_children(mnist(), SETTINGS, 17))["Deployment"][0]
    assert "nodeSelector" not in plain["spec"]["template"]["spec"]


def test_kubernetes_auth_gets_a_service_account_bound_to_the_auth_role():
    serving = mnist(auth={"mode": "kubernetes", "kubernetes": {"audience": "msv"}})
    children = by_kind(render_children(serving, SETTINGS, 17))
    binding = children["ClusterRoleBinding"][0]
    assert binding["roleRef"]["name"] == "modelserving-sidecar-auth"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mnist-sidecar", "namespace": "demo"}
    ]
    pod = children["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mnist-sidecar"
    assert "kube-api-access" in {m["name"] for m in pod["containers"][1]["volumeMounts"]}
    config = parse_config(render_sidecar_config(serving, SETTINGS, 17))
    assert (config.auth.mode, config.auth.audience) == (AuthMode.KUBERNETES, "msv")


def test_covers_ignores_what_the_server_adds_but_sees_edits():
    desired = render_service(mnist())
    live = copy.deepcopy(desired)
    live["spec"]["clusterIP"] = "10.0.0.1"
    live["metadata"]["resourceVersion"] = "5"
    assert covers(live, desired)
    live["spec"]["ports"][0]["port"] = 9999
    assert not covers(live, desired)


def test_settings_flags_win_over_environment_and_bad_values_are_named():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--namespace", "a", "--namespace", "b", "--worker-limit", "5"])
    settings = settings_from(args, {"MODELSERVING_WORKER_LIMIT": "9", "POD_NAMESPACE": "ops"})
    assert settings.namespaces == ("a", "b")
    assert settings.worker_limit == 5
    assert settings.operator_namespace == "ops"
    with pytest.raises(SettingsError, match="MODELSERVING_KAFKA_BOOTSTRAP"):
        settings_from(parser.parse_args([]), {"MODELSERVING_KAFKA_BOOTSTRAP": "nope"})


def test_status_from_the_deployment_keeps_transition_times_when_nothing_flips():
    deployment = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "updatedReplicas": 2,
        },
    }
    conditions = deployment_conditions(deployment)
    assert [(c.type, c.status, c.reason) for c in conditions] == [
        ("Ready", True, "Available"),
        ("Progressing", False, "RolloutComplete"),
        ("Degraded", False, "AsExpected"),
    ]
    first = merge_conditions([], conditions, 2, "2026-01-01T00:00:00Z")
    again = merge_conditions(first, conditions, 2, "2026-01-02T00:00:00Z")
    assert again == first
    deployment["status"]["availableReplicas"] = 0
    deployment["status"]["readyReplicas"] = 0
    flipped = merge_conditions(first, deployment_conditions(deployment), 2, "2026-01-03T00:00:00Z")
    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def _rollout_status(updated: int, ready: int, generation: int = 1) -> dict:
    deployment = {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": generation,
            "replicas": 2,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": updated,
        },
    }
    conditions = merge_conditions([], deployment_conditions(deployment), generation, "t")
    return {
        "modelId": 7,
        "replicas": 2,
        "readyReplicas": ready,
        "updatedReplicas": updated,
        "readyText": f"{ready}/2",
        "conditions": conditions,
    }


def test_a_status_that_only_tells_a_rollouts_progress_may_wait_one_that_flips_may_not():
    started = _rollout_status(updated=0, ready=0)
    assert progress_only(started, _rollout_status(updated=2, ready=1))  # counts and messages
    assert not progress_only(started, _rollout_status(updated=2, ready=2))  # Ready flips
    assert not progress_only(started, _rollout_status(updated=0, ready=0, generation=2))
    assert not progress_only(started, {**started, "modelId": 8})
    assert not progress_only({}, started)  # the first status of a serving


def configmaps_of(spec: ServingSpec) -> dict[str, dict]:
    return {cm["metadata"]["name"]: cm for cm in render_configmaps(spec, SETTINGS, 17)}


def test_configmaps_pods_read_at_start_are_named_by_their_content_and_immutable():
    # The same content: the same names, whatever renders it when
    first, again = configmaps_of(mnist()), configmaps_of(mnist())
    assert first == again
    assert sorted(first) == sorted(again) and len(first) == 2
    for name, cm in first.items():
        assert cm["immutable"] is True
        assert name.startswith(("mnist-tfserving-", "mnist-sidecar-"))
        assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # Another version: both files change, and so do both names (the sidecar's routes to it)
    other = configmaps_of(mnist(model={"version": 2, "basePath": "s3://models/mnist"}))
    assert not set(other) & set(first)
    # Another batching setting: TF Serving's alone
    batched = configmaps_of(mnist(server={"batching": {"enabled": True, "maxBatchSize": 8}}))
    assert len(set(batched) & set(first)) == 1
    (new,) = set(batched) - set(first)
    assert new.startswith("mnist-tfserving-")


def test_the_pod_template_names_the_configmaps_it_reads():
    spec = mnist()
    children = render_children(spec, SETTINGS, 17)
    names = {c["metadata"]["name"] for c in children if c["kind"] == "ConfigMap"}
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    mounted = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert names <= mounted
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert volumes["tfserving-config"].startswith("mnist-tfserving-")
    assert volumes["sidecar-config"].startswith("mnist-sidecar-")
    # and the sidecar's file there is one the sidecar's own parser takes
    text = configmaps_of(spec)[volumes["sidecar-config"]]["data"]["sidecar.yaml"]
    assert parse_config(yaml.safe_load(text)).model.version == 1


def _deployment(generation: int, observed: int, available: int, updated: int) -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": observed,
            "replicas": 2,
            "readyReplicas": available,
            "availableReplicas": available,
            "updatedReplicas": updated,
        },
    }


def test_a_change_the_deployment_controller_has_not_seen_yet_keeps_the_serving_ready():
    # The Deployment was just written: its status still counts the pods that serve
    ready, progressing, degraded = deployment_conditions(
        _deployment(generation=3, observed=2, available=2, updated=2), rolling_to="version 4"
    )
    assert (ready.status, ready.reason) == (True, "RollingOut")
    assert (progressing.status, progressing.reason) == (True, "RollingOut")
    assert "version 4" in progressing.message
    assert not degraded.status
    # A roll under way, the old pods serving: Ready, and Progressing names what it brings
    ready, progressing, _ = deployment_conditions(
        _deployment(generation=3, observed=3, available=2, updated=1), rolling_to="version 4"
    )
    assert (ready.status, progressing.status) == (True, True)
    assert progressing.message == "1 of 2 replicas updated to version 4"


def test_a_refused_write_is_degraded_and_leaves_ready_to_the_pods_that_serve():
    refused = ApplyFailure(APPLY_FAILED, "applying Ingress mnist: 429 Too Many Requests")
    serving = _deployment(generation=2, observed=2, available=2, updated=2)

    ready, progressing, degraded = deployment_conditions(serving, refused)

    assert (ready.status, ready.reason) == (True, "Available")
    assert (progressing.status, progressing.reason) == (False, APPLY_FAILED)
    assert (degraded.status, degraded.reason, degraded.message) == (
        True,
        APPLY_FAILED,
        refused.message,
    )
    # With no pods serving, Ready is False for what serves, not for the write
    down = _deployment(generation=2, observed=2, available=0, updated=2)
    assert deployment_conditions(down, refused)[0].reason == "Unavailable"
    # Before the Deployment exists nothing serves: Ready says why
    assert deployment_conditions(None, refused)[0] == Condition(
        "Ready", False, APPLY_FAILED, refused.message
    )
    # A Conflict (a child's name is another's) holds Ready False
    taken = ApplyFailure(CONFLICT, "Service mnist already exists")
    assert deployment_conditions(serving, taken)[0].reason == CONFLICT


def test_a_serving_that_may_go_to_zero_has_the_operators_endpoints_not_a_selector():
    spec = ServingSpec.from_body(
        mnist_body(autoscaling={"enabled": True, "metric": "concurrency", "minReplicas": 0})
    )
    assert "selector" not in render_service(spec)["spec"]
    pods = [Endpoint("10.0.0.9", "mnist-b", "demo"), Endpoint("10.0.0.2", "mnist-a", "demo")]
    slice_ = render_endpoint_slice(spec, pods)
    assert slice_["metadata"]["labels"][SLICE_SERVICE_LABEL] == "mnist"
    assert slice_["metadata"]["labels"][SLICE_MANAGED_BY_LABEL] == SLICE_MANAGED_BY
    assert slice_["addressType"] == "IPv4"
    assert [e["addresses"] for e in slice_["endpoints"]] == [["10.0.0.2"], ["10.0.0.9"]]
    assert slice_["endpoints"][0]["targetRef"] == {
        "kind": "Pod",
        "namespace": "demo",
        "name": "mnist-a",
    }
    # By the names of the Service's ports, on the sidecar's (and the activator's) numbers.
    assert [(p["name"], p["port"]) for p in slice_["ports"]] == [("http", 8080), ("grpc", 8500)]
    assert render_endpoint_slice(spec, [])["endpoints"] == []  # at zero without an activator
    minimum_one = ServingSpec.from_body(
        mnist_body(autoscaling={"enabled": True, "metric": "concurrency", "minReplicas": 1})
    )
    assert render_service(minimum_one)["spec"]["selector"]


def test_the_endpoints_read_are_the_ready_ones_and_the_pods_that_answer():
    slices = [
        {
            "endpoints": [
                {
                    "addresses": ["10.1.0.7"],
                    "conditions": {"ready": True},
                    "targetRef": {"name": "act-1", "namespace": "ops"},
                },
                {"addresses": ["10.1.0.8"], "conditions": {"ready": False}},
                {"addresses": ["10.1.0.3"], "targetRef": {"name": "act-0", "namespace": "ops"}},
            ]
        },
        {"endpoints": None},
    ]
    assert ready_endpoints(slices) == (
        Endpoint("10.1.0.3", "act-0", "ops"),
        Endpoint("10.1.0.7", "act-1", "ops"),
    )
    pods = [
        {"name": "a", "ready": True, "ip": "10.0.0.1"},
        {"name": "b", "ready": False, "ip": "10.0.0.2"},
        {"name": "c", "ready": True, "ip": None},
        {"name": "d", "ready": True, "ip": "10.0.0.4", "deleting": True},
    ]
    assert pod_endpoints("demo", pods) == [Endpoint("10.0.0.1", "a", "demo")]


def test_at_zero_a_serving_the_activator_wakes_is_ready():
    at_zero = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 3},
    }
    woken, *_ = deployment_conditions(at_zero, wakes=True)
    assert (woken.status, woken.reason) == (True, "ScaledToZero")
    assert "first request wakes it" in woken.message
    refused, *_ = deployment_conditions(at_zero, wakes=False)
    assert (refused.status, refused.reason) == (False, "ScaledToZero")
    assert "--activator-service" in refused.message
    fixed, *_ = deployment_conditions(at_zero)
    assert (fixed.status, fixed.message) == (False, "the serving has 0 replicas")
