"""The chart's dashboard and alerts against a real Prometheus that scrapes a real sidecar (with
traffic through it and its inference log on the real broker), the real operator (with a
serving it made on the real cluster) and the real activator (which wakes a serving at zero and
refuses a Host no serving has): every dashboard query returns series, and every alert's
expression evaluates and is about series that exist.

How an alert's expression is judged: it must evaluate without error, Prometheus must evaluate
the loaded rule without error, and each metric selector in it, with every label matcher turned
into "the label is there" (`{code=~"5.."}` becomes `{code!=""}`) and the labels it groups by
required too (but `version`, which the sidecar sets only where it knows the version), must
return series. A renamed metric or label fails; a threshold a healthy system does not cross
does not.

The test's Prometheus gives the sidecar's target the labels the chart's ServiceMonitor gives a
serving's pods in a cluster (`namespace`, `serving`, `pod`), and keeps the operator's and the
activator's own labels (`honor_labels`, as their ServiceMonitors do)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import yaml
from kubernetes import client

from modelserving import api
from modelserving_sidecar.app import create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.main import serving
from tests.support.activator_process import running_activator
from tests.support.chart import rendered_dashboard, write_rules
from tests.support.ports import free_port
from tests.support.prometheus import (
    PrometheusServer,
    Target,
    dashboard_queries,
    relaxed_selectors,
)
from tests.support.servings import is_ready, read_or_none, serving_manifest
from tests.support.waiting import wait_for, wait_for_async

MODEL = "half_plus_two"
KEY = "monitoring-test-key"
SERVING = "hpt"
IDLE = "idle"  # a serving at zero, for the activator's series


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def operator_flags(metrics_port: int) -> list[str]:
    return ["--metrics-port", str(metrics_port)]


async def test_every_dashboard_query_and_alert_expression_returns_series(
    local_env,
    activator_kubeconfig,
    operator,
    crds,
    kube_client,
    namespace,
    process_node,
    topic,
    upstream,
    metrics_port,
    tmp_path,
):
    # Given a serving made by the real operator, so that it reports the serving's conditions
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest(SERVING, logging={"kafka": {"topic": topic}}),
    )
    # And one at zero, whose pod lands where nothing answers yet (the activator wakes it)
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest(
            IDLE,
            auth={"mode": "none"},
            logging={"enabled": False},
            server=process_node.placement(),
            autoscaling={"enabled": True, "metric": "concurrency", "minReplicas": 0},
        ),
    )
    wait_for(lambda: is_ready(crds, namespace, SERVING), 60, "the serving Ready")
    apps = client.AppsV1Api(kube_client)
    wait_for(lambda: read_or_none(apps.read_namespaced_deployment, IDLE, namespace), 60, IDLE)
    apps.patch_namespaced_deployment_scale(IDLE, namespace, {"spec": {"replicas": 0}})

    # And a real sidecar with its inference log on the real broker
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    config = parse_config(
        {
            "serving": {"name": SERVING, "namespace": namespace, "projectId": 80},
            "model": {"name": MODEL, "version": 1, "modelId": 17},
            "upstream": {"url": upstream},
            "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
            "logging": {
                "mode": "ALL",
                "topic": topic,
                "bootstrapServers": local_env.kafka_bootstrap,
                "spoolDir": str(tmp_path / "spool"),
            },
        }
    )
    dashboard = rendered_dashboard(local_env)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    rules = write_rules(local_env, rules_dir)
    alerts = {
        rule["alert"]: rule["expr"]
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
    }

    (tmp_path / "activator").mkdir()
    async with (
        serving(create_app(config)) as url,
        aiohttp.ClientSession() as http,
        running_activator(tmp_path / "activator", activator_kubeconfig, namespace) as activator,
    ):
        # And a real Prometheus scraping them every second, with the chart's rules loaded
        (tmp_path / "prometheus").mkdir()
        prometheus = PrometheusServer(
            tmp_path / "prometheus",
            free_port(),
            [
                Target(
                    "modelserving-sidecar",
                    url.removeprefix("http://"),
                    labels={"namespace": namespace, "serving": SERVING, "pod": f"{SERVING}-0"},
                ),
                Target("modelserving-operator", f"127.0.0.1:{metrics_port}"),
                Target("modelserving-activator", activator.url.removeprefix("http://")),
            ],
            rule_files=[rules],
        )
        await asyncio.to_thread(prometheus.start)
        try:
            # When requests flow: answered, refused for a bad body, refused for no credential
            predict = f"{url}/v1/models/{MODEL}:predict"
            good = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}

            async def traffic() -> None:
                while True:
                    for body, headers in (
                        (b'{"instances": [1.0, 2.0]}', good),
                        (b"{broken", good),
                        (b'{"instances": [3.0]}', {}),
                    ):
                        async with http.post(predict, data=body, headers=headers) as resp:
                            await resp.read()
                    await asyncio.sleep(0.1)

            # And requests at the activator: one for the serving at zero (held, it wakes it),
            # one for a Host no serving has (refused)
            async def at_zero() -> None:
                headers = {"Host": f"{IDLE}.{namespace}.svc"}
                idle = f"{activator.url}/v1/models/{MODEL}:predict"
                async with http.post(idle, data=b'{"instances": [1.0]}', headers=headers) as resp:
                    await resp.read()

            held = asyncio.create_task(at_zero())
            async with http.get(f"{activator.url}/v1/models/x", headers={"Host": "nowhere"}) as r:
                assert r.status == 404
            sending = asyncio.create_task(traffic())
            try:
                await _check_queries(prometheus, dashboard, alerts)
            finally:
                sending.cancel()
                held.cancel()
        finally:
            await asyncio.to_thread(prometheus.stop)


async def _check_queries(prometheus: PrometheusServer, dashboard: dict, alerts: dict) -> None:
    async def scraped() -> bool:
        up = await prometheus.targets_up()
        jobs = ("modelserving-sidecar", "modelserving-operator", "modelserving-activator")
        return all(up.get(job, False) for job in jobs)

    await wait_for_async(scraped, 60, "Prometheus scraping the sidecar, operator, activator", 0.5)

    # Then every dashboard query returns series (rates need two scrapes in their window)
    queries = dashboard_queries(dashboard)
    empty: dict[str, str] = {}

    async def all_answer() -> bool:
        empty.clear()
        for title, expr in queries.items():
            if not await prometheus.query(expr):
                empty[title] = expr
        return not empty

    try:
        await wait_for_async(all_answer, 60, "every dashboard query to return series", 1.0)
    except pytest.fail.Exception:
        pytest.fail(f"dashboard queries without series:\n{json.dumps(empty, indent=2)}")
    assert len(queries) >= 20

    # And every alert's expression evaluates, and its selectors return series
    for alert, expr in alerts.items():
        await prometheus.query(expr)  # raises on an error
        for selector in relaxed_selectors(expr):
            assert await prometheus.query(selector), f"{alert}: {selector} returns no series"

    # And Prometheus evaluates each loaded rule without error
    async def rules_evaluated() -> list[dict]:
        rules = await prometheus.rules()
        return rules if all(r.get("lastEvaluation", "").startswith("2") for r in rules) else []

    evaluated = await wait_for_async(rules_evaluated, 30, "every rule evaluated once", 0.5)
    assert {r["name"] for r in evaluated} == set(alerts)
    assert [r for r in evaluated if r["health"] != "ok"] == []
