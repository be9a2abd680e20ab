"""The chart's files agree with their one source: the CRDs with crds/, the appVersion
with pyproject.toml, the defaults it shares with the operator with modelserving.api, and
every value with its comment, its schema and the README."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from modelserving import api
from modelserving_operator.settings import OperatorSettings
from tests.support import REPO

CHART = REPO / "charts" / "modelserving"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):")
# Values that are the operator's (and the sidecar's) defaults too: one source, modelserving.api.
SHARED_DEFAULTS = {
    "image.repository": api.IMAGE_REPOSITORY,
    "tfserving.image.repository": api.TFSERVING_IMAGE_REPOSITORY,
    "tfserving.image.tag": api.TFSERVING_IMAGE_TAG,
    "inferenceLog.mode": api.LOG_MODE,
    "inferenceLog.durability": api.LOG_DURABILITY,
    "inferenceLog.compression": api.LOG_COMPRESSION,
    "inferenceLog.sampling.successRate": api.LOG_SUCCESS_SAMPLE_RATE,
    "inferenceLog.sampling.errorRate": api.LOG_ERROR_SAMPLE_RATE,
    "inferenceLog.payloads.maxBytes": api.LOG_MAX_PAYLOAD_BYTES,
    "inferenceLog.payloads.oversize": api.LOG_OVERSIZE_PAYLOAD,
    "inferenceLog.payloads.nonJson": api.LOG_NON_JSON_PAYLOAD,
}


def documented_values() -> tuple[set[str], set[str]]:
    """(every key path of values.yaml, the paths whose comment starts with `# --`).

    helm-docs' convention: a `# -- text` comment block right above a key documents
    that key and everything below it.
    """
    paths: set[str] = set()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    comment_block: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match["key"]))
            path = ".".join(key for _, key in stack)
            paths.add(path)
            if comment_block and comment_block[0].startswith("# --"):
                documented.add(path)
        comment_block = []
    return paths, documented


def test_chart_ships_exactly_the_crds_of_crds_folder():
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert source, "crds/ holds no CRD"
    assert shipped.keys() == source.keys(), "run `make chart-sync`: the chart's crds/ differ"
    drifted = [name for name in source if shipped[name] != source[name]]
    assert not drifted, f"run `make chart-sync`: the chart's copies of {drifted} differ"


def test_chart_app_version_is_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project["version"], "run `make chart-sync`"


def test_every_value_is_commented():
    paths, documented = documented_values()
    undocumented = sorted(
        path
        for path in paths
        if not any(path == d or path.startswith(d + ".") for d in documented)
        and not any(p.startswith(path + ".") for p in paths)  # a block: its children tell
    )
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_every_documented_value_is_in_the_readme():
    _, documented = documented_values()
    readme = (CHART / "README.md").read_text()
    missing = sorted(path for path in documented if f"`{path}`" not in readme)
    assert not missing, f"values missing from the chart README: {missing}"


def test_schema_knows_every_value_and_no_other():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict, schema_node: dict, prefix: str) -> list[str]:
        problems = []
        props = schema_node.get("properties")
        if props is None:
            return problems  # an open object (resources, securityContext, ...)
        for key, value in node.items():
            if key not in props:
                problems.append(f"{prefix}{key} has no schema")
            elif isinstance(value, dict) and "properties" in props[key]:
                problems.extend(walk(value, props[key], f"{prefix}{key}."))
        problems.extend(f"{prefix}{key} is in the schema only" for key in props.keys() - node)
        return problems

    assert walk(values, schema, "") == []
    assert schema.get("additionalProperties") is False, "a misspelt value must be refused"


def test_image_tag_defaults_to_app_version():
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert "default .Chart.AppVersion .Values.image.tag" in helpers
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["tag"] == "" and values["sidecar"]["image"]["tag"] == ""


@pytest.mark.parametrize("path", SHARED_DEFAULTS)
def test_values_shared_with_the_operator_are_its_defaults(path):
    value = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in path.split("."):
        value = value[key]
    assert value == SHARED_DEFAULTS[path], f"values.yaml {path} is not modelserving.api's default"


def test_the_chart_lets_the_operator_read_secrets_as_the_operator_does_by_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["rbac"]["readSecrets"] is OperatorSettings().read_secrets is True


def test_the_chart_allows_the_ingress_annotations_the_operator_allows_by_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    allowed = values["servingPolicy"]["ingressAllowedAnnotations"]
    assert tuple(allowed) == OperatorSettings().ingress_allowed_annotations


def test_the_readme_shows_each_values_default_as_values_yaml_has_it():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", (CHART / "README.md").read_text(), re.M)
    assert rows, "the README's table of values is gone"
    for path, shown in rows:
        value = values
        for key in path.split("."):
            value = value[key]
        assert shown == json.dumps(value), f"README shows {path} = {shown}, values.yaml {value!r}"


# ---- the monitoring section of the README: every alert with its runbook, the dashboard shown --

MAX_PICTURE_BYTES = 300 * 1024  # the picture is in the repository and in every clone


def test_the_readme_lists_every_alert_with_a_runbook():
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|$", (CHART / "README.md").read_text(), re.M)
    runbooks = {alert: runbook for alert, _, runbook in rows if alert in alerts}
    assert set(runbooks) == alerts, f"alerts missing from the README: {alerts - set(runbooks)}"
    assert all(len(runbook.split()) >= 10 for runbook in runbooks.values())


def test_the_readme_shows_the_dashboard_and_names_every_panel():
    readme = (CHART / "README.md").read_text()
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    listed = set(re.findall(r"^\| [\w ]+ \| (.+?) \| .+ \|$", readme, re.M))
    panels = {panel["title"] for panel in dashboard["panels"] if panel["type"] != "row"}
    assert panels <= listed, f"panels missing from the README: {panels - listed}"
    (picture,) = re.findall(r"\]\((docs/[\w.-]+\.png)\)", readme)
    assert 0 < (CHART / picture).stat().st_size < MAX_PICTURE_BYTES
