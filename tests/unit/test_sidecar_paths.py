"""The pure parts of the sidecar's request path: canonical paths, routes, request ids, API keys."""

from __future__ import annotations

import hashlib
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelserving.cli import main as cli_main
from modelserving_sidecar.auth.api_keys import hash_api_key, read_key_hashes
from modelserving_sidecar.request_id import new_request_id, request_id
from modelserving_sidecar.routing.paths import PathRefused, RouteKind, RouteTable, canonical_path


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("/v1/models/m:predict", "/v1/models/m:predict"),
        ("//v1///models/m:predict", "/v1/models/m:predict"),
        ("/v1/./models/x/../m:predict", "/v1/models/m:predict"),
        ("/v1/models/m%3Apredict?x=1", "/v1/models/m:predict"),
        ("/v1/models/%6D:predict/", "/v1/models/m:predict"),
        ("/healthz/..", "/"),
        ("/", "/"),
    ],
)
def test_spellings_of_one_path_have_one_canonical_form(raw, canonical):
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "/a%252Fb",
        "/a%00",
        "/a;b",
        "/a%zz",
        "/caf%C3%A9",
        "/..",
        "/a/../..",
        "/%2e%2e",
        "relative",
        "http://host/a",
        "*",
        "/a b",
        "/a#b",
    ],
)
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(PathRefused) as refused:
        canonical_path(raw)
    assert refused.value.status == 400


@given(st.text(max_size=80))
def test_canonical_paths_are_fixed_points_without_tricks(raw):
    try:
        path = canonical_path("/" + raw)
    except PathRefused:
        return
    assert canonical_path(path) == path
    assert "//" not in path
    assert not re.search(r"(^|/)\.{1,2}(/|$)", path)
    assert "%" not in path and "\\" not in path


def test_route_table_names_this_models_routes():
    table = RouteTable("mnist", "demo", 80)
    predict = table.resolve("/hopsworks-api/api/project/80/inference/models/mnist:predict")
    assert (predict.kind, predict.upstream_path, predict.model_version) == (
        RouteKind.INFERENCE,
        "/v1/models/mnist:predict",
        None,
    )
    versioned = table.resolve("/v1/models/mnist/versions/2:regress")
    assert (versioned.label, versioned.model_version) == ("regress", 2)
    labelled = table.resolve("/v1/models/mnist/labels/canary:predict")
    assert (labelled.model_version, labelled.version_label) == (None, "canary")
    assert table.resolve("/v1/models/mnist/labels/canary").kind is RouteKind.MODEL_STATUS
    assert table.resolve("/v1/models/mnist/versions/2/metadata").kind is RouteKind.MODEL_METADATA
    other = table.resolve("/v1/models/fashion:predict")
    assert other.error == "Servable not found for request: Latest(fashion)"
    assert table.resolve("/healthz").public
    assert not table.resolve("/v1/models/mnist:predict").public


def test_request_ids_are_kept_when_sane_and_time_ordered_when_new():
    assert request_id("req-42") == "req-42"
    assert request_id("x" * 129) != "x" * 129
    assert request_id("new\nline") != "new\nline"
    first, second = new_request_id(), new_request_id()
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first
    )
    assert first[:8] <= second[:8] and first != second


def test_apikey_command_prints_the_key_once_and_a_secret_of_its_hash(capsys):
    assert cli_main(["apikey", "--serving", "mnist", "-n", "demo", "--key-name", "team-a"]) == 0
    out, err = capsys.readouterr()
    key = err.strip().splitlines()[-1]
    secret = yaml.safe_load(out)
    assert secret["metadata"] == {
        "name": "mnist-apikeys",
        "namespace": "demo",
        "labels": {
            "app.kubernetes.io/instance": "mnist",
            "app.kubernetes.io/part-of": "modelserving",
        },
    }
    assert secret["stringData"] == {"team-a": hashlib.sha256(key.encode()).hexdigest()}
    assert key not in out


def test_key_files_that_are_not_hashes_are_ignored(tmp_path):
    (tmp_path / "good").write_text(hash_api_key("k") + "\n")
    (tmp_path / "plain").write_text("k")
    (tmp_path / "..data").mkdir()
    assert read_key_hashes(tmp_path) == {"good": hash_api_key("k")}
