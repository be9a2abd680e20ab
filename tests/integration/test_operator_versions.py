"""Several model versions in one serving, on the real cluster: the API server refuses a split
that cannot work with a message saying what to fix, and moving traffic between versions
updates the ConfigMaps the pods re-read without touching the pods."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support import REPO
from tests.support.ready_watch import ReadyWatch
from tests.support.servings import (
    condition,
    configmaps_of,
    get_serving,
    is_ready,
    serving_manifest,
)
from tests.support.tfserving_config import parse_models_config
from tests.support.waiting import wait_for

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

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
    create(
        crds,
        namespace,
        with_model(
            "abn",
            versions=[
                {"version": 1, "weight": 34},
                {"version": 2, "weight": 33},
                {"version": 3, "weight": 33},
            ],
            shadow={"version": 4, "percent": 100},
            sticky={"by": "header", "header": "x-session-id"},
        ),
    )
    by_caller = with_model("bycaller", "kubernetes", versions=CANARY["versions"])
    by_caller["spec"]["model"]["sticky"] = {"by": "caller"}
    create(crds, namespace, by_caller)
    create(crds, namespace, with_model("old", version=7))
    canary = yaml.safe_load((REPO / "examples" / "mnist-canary.yaml").read_text())
    canary["metadata"]["namespace"] = namespace
    create(crds, namespace, canary)


def test_moving_traffic_updates_the_configmaps_and_leaves_the_pods_alone(
    operator, crds, kube_client, local_env, namespace, tmp_path
):
    def kubectl_apply(model: dict) -> None:
        """kubectl apply --server-side of the serving with this spec.model, as a user does."""
        path = tmp_path / "mnist.yaml"
        path.write_text(yaml.safe_dump(with_model("mnist", **model)))
        local_env.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))

    # Given a serving of version 3 at 90% and version 4 at 10%, Ready
    kubectl_apply(CANARY)
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    deployment = apps.read_namespaced_deployment("mnist", namespace)
    template = kube_client.sanitize_for_serialization(deployment.spec.template)
    assert get_serving(crds, namespace, "mnist")["status"]["traffic"] == "3:90 4:10"

    # When the user adds a shadow and moves the split to 50/50 (kubectl apply)
    model = {
        **CANARY,
        "versions": [
            {"version": 3, "weight": 50, "labels": ["stable"]},
            {"version": 4, "weight": 50, "labels": ["canary"]},
        ],
        "shadow": {"version": 5, "percent": 10},
    }
    kubectl_apply(model)

    # Then TF Serving's config loads 3, 4 and 5 and the sidecar's routing file says 50/50
    def models_config() -> list[int]:
        text = core.read_namespaced_config_map("mnist-versions", namespace).data["models.config"]
        config = parse_models_config(text).model_config_list.config[0]
        return list(config.model_version_policy.specific.versions)

    def routing() -> dict:
        text = core.read_namespaced_config_map("mnist-versions", namespace).data["routing.yaml"]
        return yaml.safe_load(text)

    wait_for(lambda: models_config() == [3, 4, 5], timeout=30, what="models.config with 3, 4, 5")
    wait_for(lambda: "shadow" in routing(), timeout=30, what="routing.yaml with the shadow")
    assert routing()["versions"] == model["versions"]
    assert routing()["shadow"] == {"version": 5, "percent": 10}
    # And kubectl get shows the new split once the operator has seen generation 2
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist", 2), timeout=60, what="gen 2")
    assert serving["status"]["traffic"] == "3:50 4:50 shadow 5:10%"

    # When the canary wins: version 4 alone, version 3 and the shadow dropped
    kubectl_apply({**CANARY, "versions": [{"version": 4, "weight": 100, "labels": ["stable"]}]})

    # Then TF Serving's config names version 4 only
    wait_for(lambda: models_config() == [4], timeout=30, what="models.config with 4 only")
    serving = wait_for(lambda: is_ready(crds, namespace, "mnist", 3), timeout=60, what="gen 3")
    assert serving["status"]["traffic"] == "4:100"

    # And the pods were never touched: the same template, the same generation of the Deployment
    after = apps.read_namespaced_deployment("mnist", namespace)
    assert kube_client.sanitize_for_serialization(after.spec.template) == template
    assert after.metadata.generation == deployment.metadata.generation


def test_a_weight_change_leaves_the_callers_of_a_version_whose_weight_stayed(
    operator, crds, kube_client, namespace
):
    core = client.CoreV1Api(kube_client)

    def split(*weights: int) -> dict:
        return {
            "spec": {
                "model": {
                    "versions": [{"version": v, "weight": w} for v, w in enumerate(weights, 1)]
                }
            }
        }

    def buckets() -> list[int]:
        text = core.read_namespaced_config_map("mnist-versions", namespace).data["routing.yaml"]
        return yaml.safe_load(text)["buckets"]

    # Given a serving split 50/25/25 between versions 1, 2 and 3
    manifest = with_model("mnist", **split(50, 25, 25)["spec"]["model"])
    create(crds, namespace, manifest)
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    before = buckets()
    assert before == [1] * 50 + [2] * 25 + [3] * 25

    # When version 1 gives ten of its share to version 3
    crds.patch_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "mnist", split(40, 25, 35)
    )

    # Then ten buckets move, from version 1 to version 3, and version 2 keeps every one of its
    after = wait_for(lambda: (b := buckets()) != before and b, timeout=30, what="a new table")
    moved = {(b, a) for b, a in zip(before, after, strict=True) if b != a}
    assert moved == {(1, 3)} and after.count(3) == 35
    assert [i for i, v in enumerate(after) if v == 2] == list(range(50, 75))


NOT_FOUND = "Could not find base path s3://models/mnist/4 for servable mnist"


def model_events(core, namespace: str) -> list:
    return [
        e
        for e in core.list_namespaced_event(namespace).items
        if (e.involved_object.kind, e.involved_object.name) == (api.KIND, "mnist")
        and e.reason in ("ModelLoading", "ModelLoadFailed", "AllVersionsAvailable")
    ]


def test_the_pods_model_reports_say_what_is_wrong_in_status_and_events(
    operator, crds, kube_client, local_env, namespace
):
    # Given a canary serving, Ready (KWOK's pods are ready; no sidecar has reported yet)
    manifest = with_model("mnist", **CANARY)
    manifest["spec"]["logging"] = {"enabled": False}
    create(crds, namespace, manifest)
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    core = client.CoreV1Api(kube_client)
    selector = f"{api.LABEL_INSTANCE}=mnist"
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items, 60, "a pod"
    )
    pod = pods[0].metadata.name

    def publish(versions: list[dict]) -> None:
        """The pod's model report, written through pods/status as the sidecar writes it."""
        report = {
            "server": {"reachable": True, "error": ""},
            "versions": versions,
            "auth": {"ready": True, "error": ""},
        }
        patch = {"metadata": {"annotations": {api.MODEL_REPORT_ANNOTATION: json.dumps(report)}}}
        core.patch_namespaced_pod_status(pod, namespace, patch)

    def status() -> dict:
        return get_serving(crds, namespace, "mnist").get("status") or {}

    def ready() -> dict:
        return next(c for c in status()["conditions"] if c["type"] == "Ready")

    def version(number: int, state: str, served: int, code: str = "OK", message: str = "") -> dict:
        return {
            "version": number,
            "state": state,
            "errorCode": code,
            "errorMessage": message,
            "served": served,
        }

    # When the canary is still loading in the ready pod
    publish([version(3, "AVAILABLE", 40), version(4, "LOADING", 0)])

    # Then the serving is not Ready, saying so, and status.versions shows each version's state
    loading = wait_for(lambda: (c := ready())["reason"] == "ModelLoading" and c, 30, "ModelLoading")
    assert (loading["status"], loading["message"]) == ("False", f"version 4 is LOADING in {pod}")
    assert [(v["version"], v["weight"], v["role"], v["state"]) for v in status()["versions"]] == [
        (3, 90, "stable", "AVAILABLE"),
        (4, 10, "canary", "LOADING"),
    ]

    # When TF Serving cannot find the canary's files
    publish([version(3, "AVAILABLE", 50), version(4, "END", 0, "NOT_FOUND", NOT_FOUND)])

    # Then Ready says ModelLoadFailed with TF Serving's message, and kubectl get shows it
    failed = wait_for(lambda: (c := ready())["reason"] == "ModelLoadFailed" and c, 30, "failed")
    assert NOT_FOUND in failed["message"]
    assert status()["versions"][1]["message"] == NOT_FOUND
    table = local_env.kubectl("get", "modelservings", "-n", namespace).stdout.split("\n")
    header, row = table[0].split(), table[1].split()
    assert header[:6] == ["NAME", "MODEL", "TRAFFIC", "READY", "STATUS", "REPLICAS"]
    # READY is the Ready condition, False, while every replica is ready (KWOK's pod is)
    assert row[0] == "mnist" and row[2:7] == ["3:90", "4:10", "False", "ModelLoadFailed", "1/1"]

    # And the same failure reported again (more requests served) tells no second Event
    publish([version(3, "AVAILABLE", 60), version(4, "END", 0, "NOT_FOUND", NOT_FOUND)])
    wait_for(lambda: status()["versions"][0]["servedPercent"] == 100, 30, "the new report read")

    # When the canary loads and serves its share
    publish([version(3, "AVAILABLE", 900), version(4, "AVAILABLE", 100)])

    # Then the serving is Ready again, with the split really served
    wait_for(lambda: ready()["reason"] == "Available", 30, "Ready Available again")
    assert [(v["state"], v["servedPercent"]) for v in status()["versions"]] == [
        ("AVAILABLE", 90),
        ("AVAILABLE", 10),
    ]
    model_ready = next(c for c in status()["conditions"] if c["type"] == "ModelReady")
    assert model_ready["reason"] == "AllVersionsAvailable"

    # And one Event per change of reason, a warning for the failure
    told = wait_for(lambda: len(e := model_events(core, namespace)) >= 3 and e, 30, "the Events")
    assert sorted((e.type, e.reason, e.count or 1) for e in told) == [
        ("Normal", "AllVersionsAvailable", 1),
        ("Normal", "ModelLoading", 1),
        ("Warning", "ModelLoadFailed", 1),
    ]
    assert NOT_FOUND in next(e.message for e in told if e.reason == "ModelLoadFailed")


def served_versions(core, namespace: str, pod) -> list[int]:
    """The versions a pod's TF Serving loads: its models.config, in the ConfigMap it mounts."""
    for name in configmaps_of(pod):
        data = core.read_namespaced_config_map(name, namespace).data or {}
        if "models.config" in data:
            config = parse_models_config(data["models.config"]).model_config_list.config[0]
            return list(config.model_version_policy.specific.versions)
    return []


class ModelReports:
    """Each pod's model report, written through pods/status as its sidecar would write it once
    its TF Serving has loaded the versions of its own models.config (KWOK runs no container):
    every 0.2 s, a pod that has none gets one."""

    def __init__(self, core, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        selector = f"{api.LABEL_INSTANCE}=mnist"
        while not self.stop.is_set():
            for pod in self.core.list_namespaced_pod(self.namespace, label_selector=selector).items:
                annotations = pod.metadata.annotations or {}
                if pod.metadata.deletion_timestamp or api.MODEL_REPORT_ANNOTATION in annotations:
                    continue
                versions = served_versions(self.core, self.namespace, pod)
                report = {
                    "server": {"reachable": True, "state": "up", "error": ""},
                    "versions": [
                        {
                            "version": v,
                            "state": "AVAILABLE",
                            "errorCode": "OK",
                            "errorMessage": "",
                            "served": 10,
                        }
                        for v in versions
                    ],
                    "auth": {"ready": True, "error": ""},
                }
                patch = {
                    "metadata": {"annotations": {api.MODEL_REPORT_ANNOTATION: json.dumps(report)}}
                }
                try:
                    self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, patch)
                except ApiException as exc:
                    if exc.status != 404:  # a pod gone meanwhile has no report to write
                        raise
            self.stop.wait(0.2)

    def __enter__(self) -> ModelReports:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_a_roll_to_another_version_keeps_the_serving_ready_as_the_old_pods_serve(
    operator, crds, kube_client, namespace
):
    # Given a serving of version 3 on two pods, each of whose sidecars reports version 3
    manifest = with_model("mnist", version=3)
    manifest["spec"]["server"] = {"replicas": 2}
    manifest["spec"]["logging"] = {"enabled": False}
    create(crds, namespace, manifest)
    core = client.CoreV1Api(kube_client)

    def status() -> dict:
        return get_serving(crds, namespace, "mnist").get("status") or {}

    def said(kind: str) -> dict:
        return condition(get_serving(crds, namespace, "mnist"), kind)

    with ModelReports(core, namespace):
        wait_for(lambda: said("ModelReady").get("status") == "True", 60, "ModelReady")
        wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")

        # When the user moves it to version 4, which rolls the pods (Ready read every 0.2 s)
        progress: set[str] = set()
        with ReadyWatch(crds, namespace, "mnist") as watch:
            crds.patch_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                "mnist",
                {"spec": {"model": {"version": 4}}},
            )

            # Then Progressing says a roll to version 4 goes on ...
            def rolled() -> bool:
                progressing = said("Progressing")
                if progressing.get("status") == "True":
                    progress.add(progressing.get("message", ""))
                versions = status().get("versions") or []
                return bool(
                    is_ready(crds, namespace, "mnist", 2)
                    and progressing.get("reason") == "RolloutComplete"
                    and [(v["version"], v["state"]) for v in versions] == [(4, "AVAILABLE")]
                    and said("ModelReady").get("status") == "True"
                )

            wait_for(rolled, timeout=120, what="the roll to version 4 done", interval=0.2)
            pods = core.list_namespaced_pod(namespace, label_selector=f"{api.LABEL_INSTANCE}=mnist")
            live = [p for p in pods.items if not p.metadata.deletion_timestamp]
            assert [served_versions(core, namespace, p) for p in live] == [[4], [4]]

        # ... and Ready never went False while the old pods served version 3
        assert watch.reads >= 3
        assert watch.seen == [], f"Ready was not True during the roll: {watch.seen}"
        assert any("version 4" in message for message in progress), progress


def test_a_weight_change_is_split_pending_until_every_pods_sidecar_applies_it(
    operator, crds, kube_client, namespace
):
    # Given a serving of version 3 at 100% with version 4 warm at 0%, on two pods whose
    # sidecars apply that split
    start = [
        {"version": 3, "weight": 100, "labels": ["stable"]},
        {"version": 4, "weight": 0, "labels": ["canary"]},
    ]
    manifest = with_model("mnist", versions=start)
    manifest["spec"]["server"] = {"replicas": 2}
    manifest["spec"]["logging"] = {"enabled": False}
    create(crds, namespace, manifest)
    core = client.CoreV1Api(kube_client)
    selector = f"{api.LABEL_INSTANCE}=mnist"
    pods = wait_for(
        lambda: (
            len(p := core.list_namespaced_pod(namespace, label_selector=selector).items) == 2 and p
        ),
        60,
        "two pods",
    )
    first, second = sorted(p.metadata.name for p in pods)

    def publish(pod: str, weights: dict[int, int]) -> None:
        """The pod's model report as its sidecar writes it, with the weights it applies."""
        report = {
            "server": {"reachable": True, "state": "up", "error": ""},
            "versions": [
                {
                    "version": v,
                    "state": "AVAILABLE",
                    "errorCode": "OK",
                    "errorMessage": "",
                    "served": 10,
                }
                for v in (3, 4)
            ],
            "auth": {"ready": True, "error": ""},
            "weights": {str(v): w for v, w in weights.items()},
        }
        patch = {"metadata": {"annotations": {api.MODEL_REPORT_ANNOTATION: json.dumps(report)}}}
        core.patch_namespaced_pod_status(pod, namespace, patch)

    def progressing() -> dict:
        return condition(get_serving(crds, namespace, "mnist"), "Progressing")

    publish(first, {3: 100, 4: 0})
    publish(second, {3: 100, 4: 0})
    wait_for(lambda: is_ready(crds, namespace, "mnist"), timeout=60, what="the serving Ready")
    wait_for(lambda: progressing().get("reason") == "RolloutComplete", 60, "RolloutComplete")

    # When the user gives version 4 10%, and the kubelet has not brought the routing file yet
    crds.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        "mnist",
        {"spec": {"model": {"versions": [{**start[0], "weight": 90}, {**start[1], "weight": 10}]}}},
    )

    # Then status asks for 90/10 and Progressing says no pod applies it yet
    pending = wait_for(lambda: (c := progressing())["reason"] == "SplitPending" and c, 60, "pend")
    assert pending["status"] == "True"
    assert pending["message"].startswith(
        "0 of 2 ready pods apply the new weights 3:90 4:10; 2 still apply 3:100 4:0"
    ), pending["message"]
    serving = get_serving(crds, namespace, "mnist")
    assert serving["status"]["traffic"] == "3:90 4:10"
    assert [v["weight"] for v in serving["status"]["versions"]] == [90, 10]
    assert is_ready(crds, namespace, "mnist", 2)  # the pods serve meanwhile

    # When one pod's sidecar has read the new file
    publish(first, {3: 90, 4: 10})

    # Then Progressing counts it
    wait_for(
        lambda: progressing()["message"].startswith("1 of 2 ready pods apply the new weights"),
        60,
        "one pod of two counted",
    )

    # When the other has too, Progressing is settled again
    publish(second, {3: 90, 4: 10})
    settled = wait_for(lambda: (c := progressing())["reason"] == "RolloutComplete" and c, 60, "ok")
    assert settled["status"] == "False"
