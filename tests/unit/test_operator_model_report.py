"""The pods' model reports turned into the serving's status: status.versions, ModelReady,
AuthReady, what holds Ready False, and when an Event is told."""

from __future__ import annotations

import json
from typing import Any

from modelserving_operator.spec import ModelSpec, ModelVersion, ShadowSpec
from modelserving_operator.status.conditions import Condition
from modelserving_operator.status.model_report import (
    event_for,
    model_status,
    progressing_with_pods,
    ready_with_pods,
    tfserving_exited,
)

CANARY = ModelSpec(
    name="mnist",
    base_path="s3://models/mnist",
    versions=(ModelVersion(3, 90, ("stable",)), ModelVersion(4, 10, ("canary",))),
    shadow=ShadowSpec(5, 10),
    listed=True,
)
READY = Condition("Ready", True, "Available", "1 of 1 replicas serve the model")
UNAVAILABLE = Condition("Ready", False, "Unavailable", "0 of 1 replicas are ready")
NOT_FOUND = "Could not find base path s3://models/mnist/4 for servable mnist"


def version(number: int, state: str = "AVAILABLE", served: int = 0, **error: str) -> dict:
    return {
        "version": number,
        "state": state,
        "errorCode": error.get("code", "OK"),
        "errorMessage": error.get("message", ""),
        "served": served,
    }


def pod(name: str, *versions: dict, ready: bool = True, **report: Any) -> dict:
    body = {
        "server": report.get("server", {"reachable": True, "error": ""}),
        "versions": list(versions),
        "auth": report.get("auth", {"ready": True, "error": ""}),
    }
    if "weights" in report:  # a sidecar older than the weights does not say them
        body["weights"] = {str(number): weight for number, weight in report["weights"].items()}
    return {"name": name, "ready": ready, "modelReport": json.dumps(body)}


def healthy(name: str, served: tuple[int, int, int] = (0, 0, 0)) -> dict:
    return pod(name, *(version(n, served=s) for n, s in zip((3, 4, 5), served, strict=True)))


def test_every_version_available_shows_the_split_really_served():
    status = model_status(CANARY, [healthy("a", (850, 90, 0)), healthy("b", (50, 10, 0))])

    assert status.versions == [
        {
            "version": 3,
            "weight": 90,
            "labels": ["stable"],
            "role": "stable",
            "state": "AVAILABLE",
            "servedPercent": 90,
        },
        {
            "version": 4,
            "weight": 10,
            "labels": ["canary"],
            "role": "canary",
            "state": "AVAILABLE",
            "servedPercent": 10,
        },
        {
            "version": 5,
            "weight": 0,
            "labels": [],
            "role": "shadow",
            "state": "AVAILABLE",
            "servedPercent": 0,
        },
    ]
    assert (status.model_ready.status, status.model_ready.reason) == (True, "AllVersionsAvailable")
    assert (status.auth_ready.status, status.auth_ready.reason) == (True, "AuthConfigReady")
    assert ready_with_pods(READY, status) == READY


def test_before_any_report_nothing_is_claimed_and_ready_is_the_deployments():
    status = model_status(CANARY, [{"name": "a", "ready": True, "modelReport": None}])

    assert [v["state"] for v in status.versions] == ["", "", ""]
    assert [v.get("servedPercent") for v in status.versions] == [None, None, None]
    assert not [v for v in status.versions if "servedPercent" in v]  # a merge patch drops null
    assert (status.model_ready.status, status.model_ready.reason) == (False, "AwaitingReport")
    assert status.auth_ready.reason == "AwaitingReport"
    assert ready_with_pods(READY, status) == READY


def test_a_report_that_is_not_the_contracts_json_is_left_out():
    no_version = '{"versions": [{"state": "AVAILABLE"}]}'
    broken = [
        {"name": "a", "ready": True, "modelReport": "{not json"},
        {"name": "b", "ready": True, "modelReport": no_version},
    ]
    status = model_status(CANARY, [*broken, healthy("c")])
    assert status.model_ready.reason == "AllVersionsAvailable"


def test_a_weighted_version_loading_in_a_ready_pod_holds_ready_false():
    loading = pod("a", version(3), version(4, "LOADING"), version(5))

    status = model_status(CANARY, [loading])

    assert status.versions[1]["state"] == "LOADING"
    assert (status.model_ready.reason, status.model_ready.message) == (
        "ModelLoading",
        "version 4 is LOADING in a",
    )
    assert ready_with_pods(READY, status) == Condition(
        "Ready", False, "ModelLoading", "version 4 is LOADING in a"
    )


def test_a_version_without_traffic_or_the_shadow_loading_does_not_unready_the_serving():
    model = ModelSpec(
        "mnist",
        "s3://m",
        (ModelVersion(3, 100), ModelVersion(4, 0)),
        shadow=ShadowSpec(5, 10),
        listed=True,
    )
    status = model_status(model, [pod("a", version(3), version(4, "LOADING"), version(5, "START"))])

    assert status.model_ready.reason == "ModelLoading"
    assert ready_with_pods(READY, status) == READY


def test_a_failed_load_names_tf_servings_error_and_explains_an_unavailable_deployment():
    # A new pod (not ready) whose TF Serving cannot find version 4; the old pod is fine.
    failed = pod(
        "new",
        version(3),
        version(4, "END", code="NOT_FOUND", message=NOT_FOUND),
        version(5),
        ready=False,
    )

    status = model_status(CANARY, [healthy("old"), failed])

    assert status.versions[1]["state"] == "END"
    assert status.versions[1]["message"] == NOT_FOUND
    assert status.model_ready.reason == "ModelLoadFailed"
    assert status.model_ready.message == (
        f"version 4 could not be loaded in new: NOT_FOUND: {NOT_FOUND}"
    )
    # The old pod serves as asked: a failing new pod alone does not unready the serving ...
    assert ready_with_pods(READY, status) == READY
    # ... but when the Deployment says not Ready, the pods say why
    explained = ready_with_pods(UNAVAILABLE, status)
    assert (explained.status, explained.reason) == (False, "ModelLoadFailed")
    assert NOT_FOUND in explained.message and "0 of 1 replicas" in explained.message


def test_the_worst_pod_wins_a_versions_state():
    status = model_status(
        CANARY, [healthy("a"), pod("b", version(3, "LOADING"), version(4), version(5))]
    )
    assert status.versions[0]["state"] == "LOADING"


def test_tf_serving_that_knows_no_version_yet_is_loading_not_failed():
    # TF Serving's 404 before any version loaded: the sidecar lists the routed versions UNKNOWN
    message = "Servable not found for request: Latest(mnist)"
    unknown = [version(n, "UNKNOWN", code="", message=message) for n in (3, 4, 5)]

    status = model_status(CANARY, [pod("a", *unknown)])

    assert status.model_ready.reason == "ModelLoading"
    assert message in status.model_ready.message


def test_tf_serving_that_finds_no_version_of_the_model_is_a_failed_load():
    # What the sidecar reports of TF Serving's 404 for the model (no version under its base path):
    # each routed version UNKNOWN with the code of that 404, NOT_FOUND, and its message
    message = "Could not find any versions of model mnist"
    unknown = [version(n, "UNKNOWN", code="NOT_FOUND", message=message) for n in (3, 4, 5)]

    status = model_status(CANARY, [pod("a", *unknown)])

    assert status.model_ready.reason == "ModelLoadFailed"
    assert ready_with_pods(READY, status).reason == "ModelLoadFailed"
    assert f"version 3 could not be loaded in a: NOT_FOUND: {message}" in status.blocking.message


def test_a_version_tf_serving_does_not_report_says_where_its_files_are_looked_for():
    # TF Serving lists versions 3 and 5; the sidecar adds the routed version 4 as UNKNOWN
    status = model_status(
        CANARY, [pod("a", version(3), version(4, "UNKNOWN", code=""), version(5))]
    )

    assert status.model_ready.reason == "ModelLoading"
    assert status.model_ready.message == (
        "TF Serving in a reports no version 4: it loads it once s3://models/mnist/4 holds a "
        "SavedModel"
    )
    assert ready_with_pods(READY, status).reason == "ModelLoading"


def test_tf_serving_not_answering_is_server_unavailable():
    down = pod("a", server={"reachable": False, "error": "connection refused (127.0.0.1:8501)"})

    status = model_status(CANARY, [down])

    assert status.model_ready.reason == "ServerUnavailable"
    assert "connection refused" in status.model_ready.message
    assert ready_with_pods(READY, status).reason == "ServerUnavailable"


def test_a_starting_tf_serving_is_model_loading_told_by_a_normal_event():
    # A new pod: TF Serving loads the model before it opens its ports, and has not answered yet
    refused = "TF Serving is not reachable (connection refused)"
    starting = pod(
        "a",
        version(3, "UNKNOWN", code=""),
        version(4, "UNKNOWN", code=""),
        version(5, "UNKNOWN", code=""),
        ready=False,
        server={"reachable": False, "state": "starting", "error": refused},
    )

    status = model_status(CANARY, [starting])

    assert (status.model_ready.reason, status.model_ready.message) == (
        "ModelLoading",
        "TF Serving is starting and loading the model in a (it opens its ports once the model "
        "is loaded; until then: TF Serving is not reachable (connection refused))",
    )
    ready = ready_with_pods(UNAVAILABLE, status)
    assert (ready.status, ready.reason) == (False, "ModelLoading")
    assert event_for("Unavailable", ready) == ("Normal", "ModelLoading")


def test_a_tf_serving_down_after_starting_is_server_unavailable_told_by_a_warning():
    # It answered and stopped, or the startup allowance passed without an answer
    down = pod(
        "a",
        ready=False,
        server={"reachable": False, "state": "down", "error": "TF Serving is not reachable"},
    )
    starting = pod(
        "b",
        ready=False,
        server={"reachable": False, "state": "starting", "error": "TF Serving is not reachable"},
    )

    status = model_status(CANARY, [starting, down])

    ready = ready_with_pods(UNAVAILABLE, status)
    assert (ready.reason, status.model_ready.reason) == ("ServerUnavailable", "ServerUnavailable")
    assert "TF Serving does not answer in a" in ready.message
    assert event_for("ModelLoading", ready) == ("Warning", "ServerUnavailable")


def test_a_tf_serving_that_exits_while_starting_is_server_unavailable_at_once():
    # The kubelet restarts a TF Serving killed while it loads a model too big for its limit
    status = {
        "containerStatuses": [
            {"name": "sidecar", "restartCount": 0},
            {
                "name": "tfserving",
                "restartCount": 2,
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            },
        ]
    }
    exited = tfserving_exited(status)
    assert exited == "OOMKilled, exit code 137"
    assert tfserving_exited({"containerStatuses": [{"name": "tfserving", "restartCount": 0}]}) == ""
    starting = pod(
        "a",
        ready=False,
        server={"reachable": False, "state": "starting", "error": "TF Serving is not reachable"},
    )

    status_now = model_status(CANARY, [{**starting, "tfservingExited": exited}])

    ready = ready_with_pods(UNAVAILABLE, status_now)
    assert (ready.reason, status_now.model_ready.message) == (
        "ServerUnavailable",
        (
            "TF Serving in a exited before it answered once (OOMKilled, exit code 137): "
            "kubectl logs a -c tfserving --previous says why"
        ),
    )
    assert model_status(CANARY, [starting]).model_ready.reason == "ModelLoading"


def test_a_report_without_a_server_state_is_read_by_reachable_alone():
    # A sidecar older than the state: not reachable is down, as it always was
    old = pod("a", server={"reachable": False, "error": "TF Serving is not reachable"})
    assert model_status(CANARY, [old]).model_ready.reason == "ServerUnavailable"
    assert model_status(CANARY, [healthy("b")]).model_ready.reason == "AllVersionsAvailable"


def test_an_unusable_auth_config_is_auth_config_invalid():
    bad = healthy("a")
    report = json.loads(bad["modelReport"])
    report["auth"] = {"ready": False, "error": "the API-key Secret's files are missing"}
    bad["modelReport"] = json.dumps(report)

    status = model_status(CANARY, [bad])

    assert status.model_ready.reason == "AllVersionsAvailable"
    assert (status.auth_ready.status, status.auth_ready.reason) == (False, "AuthConfigInvalid")
    assert "API-key Secret" in status.auth_ready.message
    assert ready_with_pods(READY, status).reason == "AuthConfigInvalid"


def test_a_failed_load_is_worse_than_a_loading_version():
    status = model_status(
        CANARY,
        [
            pod("a", version(3), version(4, "LOADING"), version(5)),
            pod(
                "b", version(3), version(4, "END", code="NOT_FOUND", message=NOT_FOUND), version(5)
            ),
        ],
    )
    assert status.model_ready.reason == "ModelLoadFailed"
    assert ready_with_pods(READY, status).reason == "ModelLoadFailed"


def test_an_event_is_told_only_when_the_reason_changes():
    def cond(reason: str) -> Condition:
        return Condition("ModelReady", reason == "AllVersionsAvailable", reason, "m")

    assert event_for(None, cond("AwaitingReport")) is None
    assert event_for("AwaitingReport", cond("ModelLoading")) == ("Normal", "ModelLoading")
    assert event_for("ModelLoading", cond("ModelLoading")) is None
    assert event_for("ModelLoading", cond("ModelLoadFailed")) == ("Warning", "ModelLoadFailed")
    assert event_for(None, cond("ServerUnavailable")) == ("Warning", "ServerUnavailable")
    assert event_for("ModelLoadFailed", cond("AllVersionsAvailable")) == (
        "Normal",
        "AllVersionsAvailable",
    )
    assert event_for("AllVersionsAvailable", cond("AwaitingReport")) is None


ONE_VERSION_4 = ModelSpec("mnist", "s3://models/mnist", (ModelVersion(4, 100),))


def test_old_pods_of_a_roll_serve_the_old_version_and_keep_the_serving_ready():
    # A roll from version 3 to 4: the old pods list version 3 alone, the new one version 4
    old, new = pod("old-a", version(3, served=40)), pod("new-a", version(4, served=10))

    rolling = model_status(ONE_VERSION_4, [old, pod("old-b", version(3)), new])

    assert rolling.blocking is None and rolling.explaining is None
    assert ready_with_pods(READY, rolling) == READY
    assert (rolling.model_ready.status, rolling.model_ready.reason) == (
        True,
        "AllVersionsAvailable",
    )
    # Before the new pod reports, the old ones alone: still serving
    assert ready_with_pods(READY, model_status(ONE_VERSION_4, [old])) == READY
    # An old pod whose TF Serving stopped answering does not serve
    down = pod("old-b", server={"state": "down", "reachable": False, "error": "refused"})
    assert ready_with_pods(READY, model_status(ONE_VERSION_4, [old, down])).reason == (
        "ServerUnavailable"
    )
    # The new version failing in a ready new pod still holds Ready False
    failed = pod("new-a", version(4, "END", code="NOT_FOUND", message=NOT_FOUND))
    assert ready_with_pods(READY, model_status(ONE_VERSION_4, [old, failed])).reason == (
        "ModelLoadFailed"
    )


def test_a_pod_whose_routing_file_is_not_updated_yet_serves_the_split_it_has():
    # Version 4 comes in at 10%; the kubelet has not updated the pod's routing file yet
    status = model_status(CANARY, [pod("a", version(3, served=100))])

    assert ready_with_pods(READY, status) == READY
    # ModelReady says the pod has no word of the new version yet
    assert (status.model_ready.reason, status.model_ready.message) == (
        "ModelLoading",
        "a has no word of version 4 yet",
    )


SETTLED = Condition("Progressing", False, "RolloutComplete", "every replica runs the current spec")


def applying(name: str, weights: dict[int, int], ready: bool = True) -> dict:
    return pod(name, version(3), version(4), version(5), ready=ready, weights=weights)


def test_a_weight_change_the_ready_pods_do_not_all_apply_yet_is_split_pending():
    # 100/0 -> 90/10: the kubelet has brought the new routing file to one pod of three
    pods = [
        applying("a", {3: 90, 4: 10}),
        applying("b", {3: 100, 4: 0}),
        applying("c", {3: 100, 4: 0}),
        applying("d", {3: 100, 4: 0}, ready=False),
    ]

    status = model_status(CANARY, pods)

    assert progressing_with_pods(SETTLED, status) == Condition(
        "Progressing",
        True,
        "SplitPending",
        "1 of 3 ready pods apply the new weights 3:90 4:10; 2 still apply 3:100 4:0 (the "
        "kubelet brings the routing file to the pods within about a minute)",
    )
    # What is asked stays in versions[].weight; the pods serve, Ready is untouched
    assert [v["weight"] for v in status.versions] == [90, 10, 0]
    assert ready_with_pods(READY, status) == READY
    # A rollout in progress, or a refused write, says more and is kept
    rolling = Condition("Progressing", True, "RollingOut", "1 of 3 replicas updated")
    assert progressing_with_pods(rolling, status) == rolling
    refused = Condition("Progressing", False, "ApplyFailed", "the API server refused")
    assert progressing_with_pods(refused, status) == refused


def test_once_every_ready_pod_applies_the_weights_progressing_is_settled_again():
    pods = [applying(name, {3: 90, 4: 10}) for name in "abc"]
    pods.append(applying("d", {3: 100, 4: 0}, ready=False))  # takes no request

    assert progressing_with_pods(SETTLED, model_status(CANARY, pods)) == SETTLED
    # A version of weight 0, listed or not, gets nothing: the same split
    only_3 = ModelSpec(
        name="mnist",
        base_path="s3://models/mnist",
        listed=True,
        versions=(ModelVersion(3, 100), ModelVersion(4, 0)),
    )
    status = model_status(only_3, [applying("a", {3: 100}), applying("b", {4: 0, 3: 100})])
    assert progressing_with_pods(SETTLED, status) == SETTLED


def test_a_pod_whose_sidecar_does_not_report_weights_is_unknown_never_behind():
    older = pod("old", version(3), version(4), version(5))  # an older sidecar: no weights

    alone = model_status(CANARY, [older, older])
    assert progressing_with_pods(SETTLED, alone) == SETTLED
    current = model_status(CANARY, [older, applying("a", {3: 90, 4: 10})])
    assert progressing_with_pods(SETTLED, current) == SETTLED
    behind = model_status(CANARY, [older, applying("a", {3: 100, 4: 0})])
    assert progressing_with_pods(SETTLED, behind).message == (
        "0 of 1 ready pods apply the new weights 3:90 4:10; 1 still applies 3:100 4:0 (the "
        "kubelet brings the routing file to the pods within about a minute); 1 does not report "
        "the weights it applies (a sidecar older than that report)"
    )


def test_a_serving_of_one_version_rolls_its_pods_and_has_no_split_pending():
    # Its pods read the routing once: a new version is a roll, told as RollingOut
    status = model_status(ONE_VERSION_4, [applying("old", {3: 100})])
    assert progressing_with_pods(SETTLED, status) == SETTLED
