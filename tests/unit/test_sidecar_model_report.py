"""The pod's model report: TF Serving's versions with their states and load errors, the routed
versions it does not report, its error for a model with no version, the served counts of the
last minute, and the auth configuration's health (API-key files missing, unreadable or bad)."""

from __future__ import annotations

import json
from pathlib import Path

from modelserving_sidecar.auth.api_keys import ApiKeyAuthenticator, hash_api_key
from modelserving_sidecar.auth.authenticator import READY, AuthHealth
from modelserving_sidecar.model.report import ServedWindow, model_report, significant
from modelserving_sidecar.model.state import ModelState, ModelStatus, ServerState, VersionStatus
from modelserving_sidecar.routing.split import Routing, ShadowVersion, WeightedVersion

ROUTING = Routing(
    (WeightedVersion(3, 90, ("stable",)), WeightedVersion(4, 10, ("canary",))),
    ShadowVersion(5, 10),
)
FAILED = "Could not find SavedModel .pb or .pbtxt at supplied export directory path: /m/4"


def test_tf_servings_versions_and_the_routed_ones_it_does_not_report():
    failed = VersionStatus(4, "END", "NOT_FOUND", FAILED)
    status = ModelStatus((failed, VersionStatus(3, "AVAILABLE")))
    report = model_report(ModelState.of(status, 1.0), ROUTING, {3: 1234, 9: 2}, READY)
    assert report == {
        "server": {"reachable": True, "state": "up", "error": ""},
        "versions": [
            {
                "version": 3,
                "state": "AVAILABLE",
                "errorCode": "OK",
                "errorMessage": "",
                "served": 1234,
            },
            {
                "version": 4,
                "state": "END",
                "errorCode": "NOT_FOUND",
                "errorMessage": FAILED,
                "served": 0,
            },
            {"version": 5, "state": "UNKNOWN", "errorCode": "", "errorMessage": "", "served": 0},
        ],
        "auth": {"ready": True, "error": ""},
        "weights": {"3": 90, "4": 10},
    }


def test_a_model_with_no_version_gives_each_routed_version_tf_servings_error():
    status = ModelStatus(error="Could not find any versions of model fraud", error_code="NOT_FOUND")
    report = model_report(ModelState.of(status, 1.0), ROUTING, {}, READY)
    assert report["server"] == {"reachable": True, "state": "up", "error": ""}
    assert {
        (v["version"], v["state"], v["errorCode"], v["errorMessage"]) for v in report["versions"]
    } == {
        (n, "UNKNOWN", "NOT_FOUND", "Could not find any versions of model fraud") for n in (3, 4, 5)
    }


def test_tf_serving_unreachable_says_why_and_knows_no_version():
    state = ModelState.unreachable("TF Serving is not reachable (connection refused)", 1.0)
    report = model_report(state, Routing.one_version(1), {}, AuthHealth(False, "no key"))
    assert report == {
        "server": {
            "reachable": False,
            "state": "down",
            "error": "TF Serving is not reachable (connection refused)",
        },
        "versions": [
            {"version": 1, "state": "UNKNOWN", "errorCode": "", "errorMessage": "", "served": 0}
        ],
        "auth": {"ready": False, "error": "no key"},
        "weights": {"1": 100},
    }


def test_a_starting_tf_serving_is_reported_starting_and_going_down_is_written_at_once():
    refused = "TF Serving is not reachable (connection refused)"
    starting = model_report(
        ModelState.unreachable(refused, 1.0, ServerState.STARTING),
        Routing.one_version(1),
        {},
        READY,
    )
    down = model_report(ModelState.unreachable(refused, 9.0), Routing.one_version(1), {}, READY)
    assert starting["server"] == {"reachable": False, "state": "starting", "error": refused}
    assert significant(starting) != significant(down)


def test_the_weights_of_the_routing_in_use_are_reported_and_their_change_written_at_once():
    status = ModelStatus((VersionStatus(3, "AVAILABLE"), VersionStatus(4, "AVAILABLE")))
    before = Routing((WeightedVersion(3, 100, ("stable",)), WeightedVersion(4, 0, ("canary",))))
    old = model_report(ModelState.of(status, 1.0), before, {3: 7}, READY)
    new = model_report(ModelState.of(status, 1.0), ROUTING, {3: 7}, READY)
    assert old["weights"] == {"3": 100, "4": 0}
    assert new["weights"] == {"3": 90, "4": 10}  # the shadow's percent is not a weight
    assert significant(old) != significant(new)
    # Small: it is written on every pod, every change.
    assert len(json.dumps(new["weights"], separators=(",", ":"))) < 20


def test_served_counts_change_what_is_written_only_with_the_refresh():
    status = ModelStatus((VersionStatus(1, "AVAILABLE"),))
    quiet = model_report(ModelState.of(status, 1.0), Routing.one_version(1), {1: 5}, READY)
    busy = model_report(ModelState.of(status, 2.0), Routing.one_version(1), {1: 900}, READY)
    assert quiet != busy and significant(quiet) == significant(busy)


def test_the_served_window_counts_the_last_minute():
    window = ServedWindow(60, now=0.0)
    assert window.served({3: 10}, now=5.0) == {3: 10}
    assert window.served({3: 50, 4: 5}, now=30.0) == {3: 50, 4: 5}
    # At 65 s the sample of 5 s is the newest one at least a minute old.
    assert window.served({3: 80, 4: 5}, now=65.0) == {3: 70, 4: 5}
    assert window.served({3: 80, 4: 5}, now=200.0) == {3: 0, 4: 0}


def test_the_api_key_secrets_health(tmp_path: Path):
    missing = ApiKeyAuthenticator(tmp_path / "apikeys", "ApiKey")
    missing.reload()
    assert missing.health() == AuthHealth(
        False,
        f"auth.apiKeysDir {tmp_path / 'apikeys'} does not exist: the API-key Secret is not mounted",
    )
    (tmp_path / "apikeys").mkdir()
    missing.reload()
    assert not missing.health().ready and "missing or empty" in missing.health().error
    (tmp_path / "apikeys" / "team-a").write_text(hash_api_key("k"))
    (tmp_path / "apikeys" / "team-b").write_text("the key itself, not its hash")
    missing.reload()
    assert missing.health() == AuthHealth(
        False, "API key file team-b is not the hex SHA-256 hash of a key"
    )
    (tmp_path / "apikeys" / "team-b").unlink()
    missing.reload()
    assert missing.health() == READY
