"""Several model versions in one serving, on the real cluster: the API server refuses a split
that cannot work with a message saying what to fix, and moving traffic between versions
updates the ConfigMaps the pods re-read without touching the pods."""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support.servings import get_serving, is_ready, serving_manifest
from tests.support.tfserving_config import parse_models_config
from tests.support.waiting import wait_for

CANARY = {
    "name": "mnist",
    "basePath": "s3://models/mnist",
    "versions": [
        {"version": 3, "weight": 90, "labels": ["stable"]},
        {"version": 4, "weight": 10, "labels": ["canary"]},
    ],
}


def create(crds, namespace: str, manifest: dict) -> dict:
    return crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, manifest
    )


def with_model(serving: str, auth: str = "none", **model) -> dict:
    manifest = serving_manifest(serving, auth={"mode": auth})
    manifest["spec"]["model"] = {"basePath": "s3://models/mnist", **model}
    return manifest


REFUSED = {
    "spec.model.versions[].weight must add up to 100": {
        "versions": [{"version": 3, "weight": 90}, {"version": 4, "weight": 20}]
    },
    "spec.model.versions[].version must be unique": {
        "versions": [{"version": 3, "weight": 90}, {"version": 3, "weight": 10}]
    },
    "a label names one version only": {
        "versions": [
            {"version": 3, "weight": 90, "labels": ["stable"]},
            {"version": 4, "weight": 10, "labels": ["stable"]},
        ]
    },
    "a label names one version only;": {
        "versions": [{"version": 3, "weight": 100, "labels": ["next"]}],
        "shadow": {"version": 5, "percent": 10, "labels": ["next"]},
    },
    "spec.model.shadow.version must not be a version that also gets traffic": {
        "versions": [{"version": 3, "weight": 100}],
        "shadow": {"version": 3, "percent": 10},
    },
    "must not be a version that also gets traffic by weight": {
        "version": 3,
        "shadow": {"version": 3, "percent": 10},
    },
    "spec.model.version and spec.model.versions cannot both be set": {
        "version": 3,
        "versions": [{"version": 3, "weight": 100}],
    },
    "spec.model.version (one version) or spec.model.versions (several": {"name": "mnist"},
    "spec.model.sticky.header is required when spec.model.sticky.by is header": {
        "version": 3,
        "sticky": {"by": "header"},
    },
    "spec.model.versions[0].labels[0]": {
        "versions": [{"version": 3, "weight": 100, "labels": ["Stable"]}]
    },
    "spec.model.shadow.percent": {"version": 3, "shadow": {"version": 4, "percent": 0}},
}


def test_a_split_that_cannot_work_is_refused_saying_what_to_fix(crds, namespace):
    for message, model in REFUSED.items():
        with pytest.raises(ApiException) as refused:
            create(crds, namespace, with_model("bad", **model))
        assert refused.value.status == 422, message
        assert message in refused.value.body, (message, refused.value.body)

    with pytest.raises(ApiException) as refused:
        create(crds, namespace, with_model("bad", version=3, sticky={"by": "caller"}))
    assert "spec.model.sticky.by caller needs callers to authenticate" in refused.value.body

    # What is right is taken: A/B/N, a shadow, sticky by header or by the caller
    create(crds, namespace, with_model(
        "abn",
        versions=[{"version": 1, "weight": 34}, {"version": 2, "weight": 33},
                  {"version": 3, "weight": 33}],
        shadow={"version": 4, "percent": 100},
        sticky={"by": "header", "header": "x-session-id"},
    ))  # fmt: skip
    by_caller = with_model("bycaller", "kubernetes", versions=CANARY["versions"])
    by_caller["spec"]["model"]["sticky"] = {"by": "caller"}
    create(crds, namespace, by_caller)
    create(crds, namespace, with_model("old", version=7))


def test_moving_traffic_updates_the_configmaps_and_leaves_the_pods_alone(
    operator, crds, kube_client, namespace
):
    # Given a serving of version 3 at 90% and version 4 at 10%, Ready
    create(crds, namespace, with_model("mnist", **CANARY))
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    deployment = apps.read_namespaced_deployment("mnist", namespace)
    template = kube_client.sanitize_for_serialization(deployment.spec.template)
    assert get_serving(crds, namespace, "mnist")["status"]["traffic"] == "3:90 4:10"

    # When the user adds a shadow and moves the split to 50/50 (kubectl apply)
    model = {**CANARY, "versions": [{"version": 3, "weight": 50, "labels": ["stable"]},
                                    {"version": 4, "weight": 50, "labels": ["canary"]}],
             "shadow": {"version": 5, "percent": 10}}  # fmt: skip
    crds.patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist", {"spec": {"model": model}}
    )

    # Then TF Serving's config loads 3, 4 and 5 and the sidecar's routing file says 50/50
    def models_config() -> list[int]:
        text = core.read_namespaced_config_map("mnist-tfserving", namespace).data["models.config"]
        config = parse_models_config(text).model_config_list.config[0]
        return list(config.model_version_policy.specific.versions)

    wait_for(lambda: models_config() == [3, 4, 5], timeout=30, what="models.config with 3, 4, 5")
    routing = yaml.safe_load(
        core.read_namespaced_config_map("mnist-sidecar", namespace).data["routing.yaml"]
    )
    assert routing["versions"] == model["versions"]
    assert routing["shadow"] == {"version": 5, "percent": 10}
    # And kubectl get shows the new split once the operator has seen generation 2
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=60, what="gen 2")
    assert serving["status"]["traffic"] == "3:50 4:50 shadow 5:10%"

    # And the pods were not touched: the same template, the same generation of the Deployment
    after = apps.read_namespaced_deployment("mnist", namespace)
    assert kube_client.sanitize_for_serialization(after.spec.template) == template
    assert after.metadata.generation == deployment.metadata.generation
