"""Several model versions in one serving, the operator's side: the spec read, TF Serving's
models.config (parsed as TF Serving parses it), the sidecar's routing file, and which changes
restart the pods."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelserving import api
from modelserving_operator.names import CONFIG_CHECKSUM_ANNOTATION
from modelserving_operator.render.config_maps import (
    ROUTING_KEY,
    render_models_config,
    render_routing,
    render_sidecar_config,
    render_versions_configmap,
    routed_buckets,
)
from modelserving_operator.render.manifests import render_children
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.routing.split import owners, parse_routing
from tests.support.tfserving_config import parse_models_config

REPO = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")
CANARY = {
    "versions": [
        {"version": 3, "weight": 90, "labels": ["stable"]},
        {"version": 4, "weight": 10, "labels": ["canary"]},
    ],
    "basePath": "pvc://models/mnist",
}


def serving(**model) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"basePath": "s3://models/mnist", **model},
                "auth": {"mode": "apiKey", "apiKeys": {"secretName": "k"}},
            },
        }
    )


def children(spec: ServingSpec) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["metadata"]["name"]): c for c in render_children(spec, SETTINGS, 17)}


def routing(spec: ServingSpec) -> dict:
    """The routing file, from the ConfigMap the pods mount it from."""
    (text,) = [
        c["data"]["routing.yaml"]
        for (kind, _), c in children(spec).items()
        if kind == "ConfigMap" and "routing.yaml" in c["data"]
    ]
    return yaml.safe_load(text)


def pod_template(spec: ServingSpec) -> dict:
    return children(spec)[("Deployment", "mnist")]["spec"]["template"]


def test_one_version_written_the_old_way_is_one_version_at_full_weight():
    spec = serving(version=2)

    assert [(v.number, v.weight, v.labels) for v in spec.model.versions] == [(2, 100, ())]
    assert (spec.model.version, spec.model.traffic, spec.model.listed) == (2, "2:100", False)
    assert routing(spec) == {
        "versions": [{"version": 2, "weight": 100, "labels": []}],
        "sticky": {"by": "none"},
    }


def test_models_config_loads_every_weighted_version_and_the_shadow_as_tf_serving_reads_it():
    spec = serving(**CANARY, shadow={"version": 5, "percent": 10})

    config = parse_models_config(render_models_config(spec))

    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (
        "mnist",
        "/mnt/models/mnist",
        "tensorflow",
    )
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(model.model_version_policy.specific.versions) == [3, 4, 5]


def test_models_config_of_one_version_is_as_it_was():
    config = parse_models_config(render_models_config(serving(version=1)))
    assert list(config.model_config_list.config[0].model_version_policy.specific.versions) == [1]


def test_routing_file_holds_weights_labels_shadow_and_sticky_key():
    spec = serving(
        **CANARY,
        shadow={"version": 5, "percent": 10, "labels": ["next"]},
        sticky={"by": "header", "header": "x-session-id"},
    )

    assert routing(spec) == {
        "versions": [
            {"version": 3, "weight": 90, "labels": ["stable"]},
            {"version": 4, "weight": 10, "labels": ["canary"]},
        ],
        "shadow": {"version": 5, "percent": 10, "labels": ["next"]},
        "sticky": {"by": "header", "header": "x-session-id"},
        "buckets": [3] * 90 + [4] * 10,  # a first split: laid end to end
    }
    assert spec.model.traffic == "3:90 4:10 shadow 5:10%"
    assert routing(serving(**CANARY, sticky={"by": "caller"}))["sticky"] == {"by": "caller"}


def test_the_sidecars_fallback_version_is_the_first_with_a_weight():
    spec = serving(versions=[{"version": 4, "weight": 0}, {"version": 3, "weight": 100}])
    assert render_sidecar_config(spec, SETTINGS, 17)["model"]["version"] == 3


def test_tf_serving_polls_its_config_and_the_sidecar_mounts_the_routing_file_live():
    pod = pod_template(serving(**CANARY))["spec"]
    tfs, sidecar = pod["containers"]

    poll = f"--model_config_file_poll_wait_seconds={api.TFSERVING_CONFIG_POLL_SECONDS}"
    assert poll in tfs["args"]
    routing_mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "sidecar-routing")
    # A subPath mount is never updated by the kubelet: the routing file's must be a directory.
    assert "subPath" not in routing_mount
    assert f"{routing_mount['mountPath']}/routing.yaml" == api.SIDECAR_ROUTING_FILE
    volume = next(v for v in pod["volumes"] if v["name"] == "sidecar-routing")
    # From the ConfigMap changed in place: every pod follows the weights as they move
    assert volume["configMap"] == {
        "name": "mnist-versions",
        "items": [{"key": "routing.yaml", "path": "routing.yaml"}],
    }
    tfs_config = next(m for m in tfs["volumeMounts"] if m["name"] == "tfserving-config")
    assert "subPath" not in tfs_config
    # TF Serving's directory: models.config changed in place, batching.config as at start
    tfs_volume = next(v for v in pod["volumes"] if v["name"] == "tfserving-config")
    sources = {
        s["configMap"]["items"][0]["key"]: s["configMap"]["name"]
        for s in tfs_volume["projected"]["sources"]
    }
    assert sources["models.config"] == "mnist-versions"
    assert sources["batching.config"].startswith("mnist-tfserving-")
    versions = children(serving(**CANARY))[("ConfigMap", "mnist-versions")]
    assert "immutable" not in versions and "models.config" in versions["data"]


def test_moving_traffic_between_listed_versions_restarts_no_pod():
    before = pod_template(serving(**CANARY))
    changes = [
        {**CANARY, "versions": [{"version": 3, "weight": 50}, {"version": 4, "weight": 50}]},
        {**CANARY, "shadow": {"version": 5, "percent": 10}},
        {**CANARY, "versions": [{"version": 4, "weight": 100}]},  # the canary promoted
        {**CANARY, "versions": [*CANARY["versions"], {"version": 6, "weight": 0}]},
        {**CANARY, "sticky": {"by": "header", "header": "x-user"}},
    ]
    for model in changes:
        assert pod_template(serving(**model)) == before, model
        assert routing(serving(**model)) != routing(serving(**CANARY)), model


def test_one_version_written_the_old_way_is_read_once_and_a_change_rolls_the_pods():
    def checksum(**model) -> str:
        template = pod_template(serving(**model))
        return template["metadata"]["annotations"][CONFIG_CHECKSUM_ANNOTATION]

    # The old pods keep serving the old version until they go: nothing they read changes
    pod = pod_template(serving(version=1))["spec"]
    tfs, sidecar = pod["containers"]
    assert not [arg for arg in tfs["args"] if arg.startswith("--model_config_file_poll")]
    routing_mount = next(
        m for m in sidecar["volumeMounts"] if m["mountPath"] == api.SIDECAR_ROUTING_FILE
    )
    assert routing_mount["subPath"] == "routing.yaml"
    assert checksum(version=1) != checksum(version=2)
    assert checksum(version=1) != checksum(version=1, shadow={"version": 2, "percent": 5})


def test_what_pods_read_at_start_still_rolls_them():
    plain = pod_template(serving(**CANARY))
    spec = ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u-1"},
            "spec": {
                "model": CANARY,
                "auth": {"mode": "apiKey", "apiKeys": {"secretName": "k"}},
                "sidecar": {"timeoutSeconds": 5},
            },
        }
    )
    assert pod_template(spec)["metadata"] != plain["metadata"]


def test_the_canary_example_is_a_split_the_operator_renders():
    example = yaml.safe_load((REPO / "examples" / "mnist-canary.yaml").read_text())
    spec = ServingSpec.from_body(example)

    assert spec.model.traffic == "3:90 4:10 shadow 5:10%"
    assert render_routing(spec)["sticky"] == {"by": "header", "header": "x-session-id"}
    config = parse_models_config(render_models_config(spec))
    assert list(config.model_config_list.config[0].model_version_policy.specific.versions) == [
        3,
        4,
        5,
    ]


def three_way(*weights: int) -> ServingSpec:
    return serving(
        versions=[{"version": v, "weight": w} for v, w in zip((1, 2, 3), weights, strict=True)]
    )


def test_a_weight_change_keeps_the_callers_of_the_versions_whose_weights_stayed():
    # Given the pods route 50/25/25 by the routing file in their versions ConfigMap
    live = render_versions_configmap(three_way(50, 25, 25))
    before = owners(parse_routing(yaml.safe_load(live["data"][ROUTING_KEY])))

    # When version 1 gives 10 to version 3, the operator renders from the table in use
    moved = render_versions_configmap(
        three_way(40, 25, 35), routed_buckets(live["data"][ROUTING_KEY])
    )
    after = owners(parse_routing(yaml.safe_load(moved["data"][ROUTING_KEY])))

    # Then only ten buckets move, from version 1 to version 3; version 2 keeps all of its
    changed = [b for b in range(100) if before[b] != after[b]]
    assert len(changed) == 10
    assert {(before[b], after[b]) for b in changed} == {(1, 3)}
    # And the same weights again leave the table as it is
    again = render_versions_configmap(
        three_way(40, 25, 35), routed_buckets(moved["data"][ROUTING_KEY])
    )
    assert again == moved


def test_a_routing_file_from_before_bucket_tables_routes_by_the_listed_order():
    written_before = yaml.safe_dump(
        {"versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]}
    )
    assert routed_buckets(written_before) == (3,) * 90 + (4,) * 10
    assert routed_buckets("versions: [") is None
    assert routed_buckets(yaml.safe_dump({"versions": [{"version": 3, "weight": 90}]})) is None
