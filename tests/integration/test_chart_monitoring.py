"""The chart's dashboard and alerts: rendered only when their values turn them on, from their
one file each; the alerts pass `promtool check rules` and promtool's unit tests (each alert
firing, and quiet where it must not page), and each has a runbook in the chart's README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml

from tests.support.chart import (
    CHART,
    DASHBOARD_FILE,
    MONITORING_ON,
    PROMTOOL_TESTS,
    RULES_FILE,
    named,
    of_kind,
    render,
    write_rules,
)


def test_dashboard_rules_and_monitors_are_rendered_only_when_turned_on(local_env):
    # Given the chart's defaults: none of them
    defaults = render(local_env)
    assert not of_kind(defaults, "PrometheusRule") and not of_kind(defaults, "ServiceMonitor")
    assert named(defaults, "ConfigMap", "ms-modelserving-dashboard") is None

    # When each is turned on, with labels of the user's
    objects = render(
        local_env,
        *MONITORING_ON,
        "metrics.prometheusRule.labels.release=kube-prometheus",
        "metrics.dashboard.namespace=grafana",
    )

    # Then the dashboard is in a ConfigMap Grafana's sidecar loads, as its file has it
    dashboard = named(objects, "ConfigMap", "ms-modelserving-dashboard")
    assert dashboard is not None
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "grafana"
    as_shipped = json.loads(DASHBOARD_FILE.read_text())
    assert json.loads(dashboard["data"]["modelserving.json"]) == as_shipped
    # And the rules are the rules file's, with the label the user's Prometheus selects by
    (rule,) = of_kind(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    # And the sidecars and the operator are scraped, the sidecars with their serving's name
    monitors = {m["metadata"]["name"]: m["spec"] for m in of_kind(objects, "ServiceMonitor")}
    sidecars = monitors["ms-modelserving-servings"]["endpoints"][0]
    assert {
        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"],
        "targetLabel": "serving",
    } in sidecars["relabelings"]
    operator = monitors["ms-modelserving-operator"]["endpoints"][0]
    assert (operator["port"], operator["path"]) == ("metrics", "/metrics")
    assert operator["honorLabels"] is True
    # And the activator, whose series name their serving
    activator = monitors["ms-modelserving-activator"]["endpoints"][0]
    assert (activator["port"], activator["path"], activator["honorLabels"]) == (
        "http",
        "/metrics",
        True,
    )


def test_the_operators_metrics_port_and_path_are_values(local_env):
    objects = render(local_env, "metrics.operator.port=9100", "metrics.operator.path=/op")
    deployment = named(objects, "Deployment", "ms-modelserving")
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["MODELSERVING_METRICS_PORT"], env["MODELSERVING_METRICS_PATH"]) == ("9100", "/op")
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    service = named(objects, "Service", "ms-modelserving-metrics")
    assert service is not None and service["spec"]["ports"][0]["port"] == 9100

    off = render(local_env, "metrics.operator.port=0", "metrics.serviceMonitor.enabled=true")
    assert named(off, "Service", "ms-modelserving-metrics") is None
    monitors = [m["metadata"]["name"] for m in of_kind(off, "ServiceMonitor")]
    assert monitors == ["ms-modelserving-servings", "ms-modelserving-activator"]


def test_rendered_rules_pass_promtools_check_and_unit_tests(local_env, tmp_path):
    rules = write_rules(local_env, tmp_path)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)

    check = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 11 rules found" in check.stdout
    tested = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / PROMTOOL_TESTS.name)],
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_and_a_runbook():
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    alerts = [rule["alert"] for group in groups for rule in group["rules"]]
    tests = yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"]
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in tests
        for case in test["alert_rule_test"]
    ]
    readme = (CHART / "README.md").read_text()
    for alert in alerts:
        assert (alert, True) in cases, f"no promtool test where {alert} fires"
        assert (alert, False) in cases, f"no promtool test where {alert} stays quiet"
        assert re.search(rf"^\| `{alert}` \|", readme, re.M), f"no runbook line for {alert}"
