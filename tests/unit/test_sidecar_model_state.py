"""What TF Serving says of the model: its status answers parsed (versions, states, load errors,
error bodies, answers that are not TF Serving's), and the watcher's snapshot as TF Serving (the
stand-in) loads, fails and goes away."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest

from modelserving_sidecar.config import UpstreamConfig
from modelserving_sidecar.model.state import (
    ModelStateWatcher,
    ModelStatus,
    ServerState,
    VersionStatus,
    parse_model_status,
    server_state,
)
from modelserving_sidecar.upstream.proxy import Upstream
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)

MODEL = "half_plus_two"


def status_body(*versions: tuple[str, str, str, str]) -> bytes:
    return json.dumps(
        {
            "model_version_status": [
                {
                    "version": v,
                    "state": state,
                    "status": {"error_code": code, "error_message": message},
                }
                for v, state, code, message in versions
            ]
        },
        indent=1,
    ).encode()


def test_versions_with_their_states_and_load_errors_newest_first():
    body = status_body(
        ("5", "END", "NOT_FOUND", "Could not find SavedModel .pb at /models/m/5"),
        ("4", "LOADING", "OK", ""),
        ("3", "AVAILABLE", "OK", ""),
    )
    assert parse_model_status(200, body) == ModelStatus(
        (
            VersionStatus(5, "END", "NOT_FOUND", "Could not find SavedModel .pb at /models/m/5"),
            VersionStatus(4, "LOADING"),
            VersionStatus(3, "AVAILABLE"),
        )
    )


def test_an_error_body_is_the_error_with_the_code_tf_serving_mapped_to_that_http_code():
    body = b'{ "error": "Could not find any versions of model mnist" }'
    assert parse_model_status(404, body) == ModelStatus(
        error="Could not find any versions of model mnist", error_code="NOT_FOUND"
    )


@pytest.mark.parametrize(
    "status, body, error",
    [
        (502, b"<html>bad gateway</html>", "TF Serving answered HTTP 502"),
        (200, b"<html>not json</html>", "TF Serving's model status has no model_version_status"),
        (200, b'{"predictions": [1]}', "TF Serving's model status has no model_version_status"),
        (200, b"[]", "TF Serving's model status has no model_version_status"),
    ],
)
def test_answers_that_are_not_tf_servings_status_are_errors_not_crashes(status, body, error):
    assert parse_model_status(status, body).error == error


def test_odd_entries_are_skipped_and_odd_states_are_unknown():
    body = json.dumps(
        {
            "model_version_status": [
                "junk",
                {"version": "x"},
                {"version": "2", "state": "SLEEPING"},
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": 0}},
            ]
        }
    ).encode()
    assert parse_model_status(200, body).versions == (
        VersionStatus(2, "UNKNOWN"),
        VersionStatus(1, "AVAILABLE", "0"),
    )


async def test_the_watcher_follows_tf_serving_loading_failing_and_going_away():
    model = StandInModel({3: StandInVersion(), 4: StandInVersion()})
    model.hold_loading(4)
    async with (
        running_standin(TFServingStandIn({MODEL: model})) as (_, url),
        Upstream.running(UpstreamConfig(url=url)) as upstream,
    ):
        watcher = ModelStateWatcher(upstream, MODEL, poll_seconds=60)
        changes = []
        watcher.on_change(changes.append)
        state = await watcher.look()
        assert state.reachable and state.available == {3}
        assert [(v.version, v.state) for v in state.status.versions] == [
            (4, "LOADING"),
            (3, "AVAILABLE"),
        ]
        model.fail_load(4)
        state = await watcher.look()
        assert state.status.versions[0] == VersionStatus(
            4,
            "END",
            "NOT_FOUND",
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
            "/models/half_plus_two/4",
        )
        model.make_available(4)
        assert (await watcher.look()).available == {3, 4}
        model.versions = {}
        state = await watcher.look()
        assert state.reachable and state.available == frozenset()
        assert state.status.error == f"Could not find any versions of model {MODEL}"
        assert [c.available for c in changes] == [{3}, {3, 4}, frozenset()]


async def test_the_watcher_says_why_tf_serving_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with Upstream.running(UpstreamConfig(url=f"http://127.0.0.1:{port}")) as upstream:
        state = await ModelStateWatcher(upstream, MODEL).look()
    assert not state.reachable
    assert state.error == "TF Serving is not reachable (connection refused)"
    assert state.available == frozenset()


def test_not_answering_is_starting_until_the_first_answer_or_the_allowance():
    # No answer yet since the start: starting within the allowance, down after it
    assert server_state(False, False, 599.0, 600) is ServerState.STARTING
    assert server_state(False, False, 601.0, 600) is ServerState.DOWN
    # Answered once, then stopped: down at once, allowance or not
    assert server_state(False, True, 5.0, 600) is ServerState.DOWN
    assert server_state(True, False, 5.0, 600) is ServerState.UP


async def test_the_watcher_tells_a_starting_tf_serving_from_one_that_went_away():
    # TF Serving loads the model before it opens its port: connections are refused meanwhile
    standin = TFServingStandIn({MODEL: StandInModel((3,))}, starting=True)
    async with contextlib.AsyncExitStack() as tf_serving:
        _, url = await tf_serving.enter_async_context(running_standin(standin))
        async with Upstream.running(UpstreamConfig(url=url)) as upstream:
            watcher = ModelStateWatcher(upstream, MODEL, poll_seconds=60)
            changes = []
            watcher.on_change(changes.append)
            state = await watcher.look()
            assert (state.server, state.reachable) == (ServerState.STARTING, False)
            assert state.error == "TF Serving is not reachable (connection refused)"
            await standin.finish_starting()
            state = await watcher.look()
            assert (state.server, state.available) == (ServerState.UP, {3})
            # It answered once: not answering now is down, long before the allowance
            await tf_serving.aclose()
            state = await watcher.look()
            assert state.server is ServerState.DOWN
            assert state.error == "TF Serving is not reachable (connection refused)"
    assert [c.server for c in changes] == [ServerState.UP, ServerState.DOWN]


async def test_a_tf_serving_that_never_answers_in_the_allowance_is_down_and_says_so():
    standin = TFServingStandIn({MODEL: StandInModel((3,))}, starting=True)
    async with (
        running_standin(standin) as (_, url),
        Upstream.running(UpstreamConfig(url=url)) as upstream,
    ):
        watcher = ModelStateWatcher(upstream, MODEL, startup_allowance_seconds=0)
        state = await watcher.look()
    assert state.server is ServerState.DOWN
    assert state.error == (
        "TF Serving is not reachable (connection refused); it has not answered once in the 0 s "
        "startup allowance since the pod started (TF Serving opens its ports once it has loaded "
        "the model: its log says what holds it)"
    )
