"""The Helm chart as tests render it: `helm template` with --set values, parsed into objects,
and the chart's monitoring files (the dashboard, the alert rules) as the chart renders them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

CHART = REPO / "charts" / "modelserving"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
# promtool's unit tests of the alerts: every alert firing, and quiet where it must not page.
PROMTOOL_TESTS = REPO / "tests" / "integration" / "promtool" / "alerts_test.yaml"
MONITORING_ON = (
    "metrics.dashboard.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.serviceMonitor.enabled=true",
)


def render(local_env, *values: str, release: str = "ms") -> list[dict[str, Any]]:
    """`helm template` of the chart with `values` (--set), as a list of objects."""
    sets = [arg for value in values for arg in ("--set", value)]
    proc = subprocess.run(
        ["helm", "template", release, str(CHART), "-n", "monitoring-test", *sets],
        env=local_env.tool_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    """The object of `kind` called `name`, if rendered."""
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found[0] if found else None


def rendered_rules(local_env) -> dict[str, Any]:
    """The rules file (groups) of the PrometheusRule the chart renders."""
    (rule,) = of_kind(render(local_env, *MONITORING_ON), "PrometheusRule")
    return dict(rule["spec"])


def rendered_dashboard(local_env) -> dict[str, Any]:
    """The Grafana dashboard of the ConfigMap the chart renders."""
    objects = render(local_env, *MONITORING_ON)
    (config_map,) = [o for o in of_kind(objects, "ConfigMap") if "modelserving.json" in o["data"]]
    return dict(json.loads(config_map["data"]["modelserving.json"]))


def write_rules(local_env, folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules(local_env), sort_keys=False))
    return path
