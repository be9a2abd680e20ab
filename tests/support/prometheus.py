"""Prometheus as the tests use it: the samples of one scrape read from /metrics, and a real
Prometheus server (Debian's package, installed by localenv's build) run as a subprocess with a
config, storage folder and port of its own, queried over its HTTP API."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

# A short interval keeps the tests quick: a rate() over 5 s has samples within seconds.
SCRAPE_INTERVAL = "1s"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a scrape, keyed by its name and its labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse_samples(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def series(samples: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    """The label sets of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return [dict(have) for (n, have), _ in samples.items() if n == name and wanted <= have]


@dataclass(frozen=True)
class Target:
    """One scrape target: a job name, host:port, the metrics path and the labels it gets (the
    ones the chart's ServiceMonitors give the same target in a cluster)."""

    job: str
    address: str
    path: str = "/metrics"
    labels: Mapping[str, str] = field(default_factory=dict)


class PrometheusServer:
    """`prometheus` scraping the targets every SCRAPE_INTERVAL and evaluating `rule_files`,
    with the `features` given (`exemplar-storage`: it keeps the exemplars it scrapes)."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        targets: Sequence[Target],
        rule_files: Sequence[Path] = (),
        features: Sequence[str] = (),
    ) -> None:
        self.workdir, self.port = workdir, port
        self.features = features
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {
                    "job_name": target.job,
                    "metrics_path": target.path,
                    "honor_labels": True,
                    "static_configs": [
                        {"targets": [target.address], "labels": dict(target.labels)}
                    ],
                }
                for target in targets
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    *(f"--enable-feature={feature}" for feature in self.features),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def query(self, expr: str) -> list[dict]:
        """The instant vector `expr` evaluates to now; an error Prometheus reports raises."""
        query = f"{self.url}/api/v1/query"
        async with aiohttp.ClientSession() as http, http.get(query, params={"query": expr}) as resp:
            answer = json.loads(await resp.text())
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        return list(answer["data"]["result"])

    async def exemplars(self, expr: str) -> list[dict]:
        """The exemplars of the series `expr` selects over the last hour (each series' labels
        under `seriesLabels`, its exemplars under `exemplars`)."""
        now = time.time()
        params = {"query": expr, "start": str(now - 3600), "end": str(now + 60)}
        query = f"{self.url}/api/v1/query_exemplars"
        async with aiohttp.ClientSession() as http, http.get(query, params=params) as resp:
            answer = json.loads(await resp.text())
        if answer.get("status") != "success":
            raise AssertionError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
        return list(answer["data"])

    async def rules(self) -> list[dict]:
        """The loaded rules, each with its health and last evaluation."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/api/v1/rules") as resp:
            answer = json.loads(await resp.text())
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]

    async def targets_up(self) -> dict[str, bool]:
        """Whether each job's last scrape succeeded."""
        result = await self.query("up")
        return {item["metric"]["job"]: item["value"][1] == "1" for item in result}


# Grafana's variables as a dashboard showing "All" sets them; $__rate_interval is at least
# four scrape intervals in Grafana, 10 s here.
DASHBOARD_VARIABLES = {
    "$__rate_interval": "10s",
    "$namespace": ".*",
    "$serving": ".*",
    "$operator_job": ".*",
}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
_SELECTOR = re.compile(
    r"\b(?P<name>(?:modelserving|process)_[a-zA-Z0-9_:]+)(?P<matchers>\{[^}]*\})?"
)
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_MATCHER = re.compile(r'(?P<label>\w+)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')


def dashboard_queries(dashboard: dict) -> dict[str, str]:
    """Every query of a Grafana dashboard, panels' and variables', as PromQL with the variables
    filled in; a variable's `label_values(SELECTOR, LABEL)` becomes `count by (LABEL)
    (SELECTOR)`, what Grafana asks Prometheus for it."""

    def filled(expr: str) -> str:
        for variable, value in DASHBOARD_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr

    queries = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"{panel['title']} / {target['refId']}"] = filled(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"variable {variable['name']}: not label_values(...)"
            selector = filled(match["selector"])
            queries[f"${variable['name']}"] = f"count by ({match['label']}) ({selector})"
    return queries


def relaxed_selectors(expr: str) -> list[str]:
    """The metric selectors of a PromQL expression, each label matcher made into "the label is
    there" (`{code=~"5.."}` becomes `{code!=""}`), and the labels it groups `by` required too:
    what must return series for the expression to be about metrics and labels that exist,
    whatever its thresholds and the values of the labels."""
    grouped = {
        label.strip() for by in _BY.findall(expr) for label in by.split(",") if label.strip()
    }
    selectors = []
    for match in _SELECTOR.finditer(expr):
        labels = sorted(set(_MATCHER.findall(match["matchers"] or "")) | grouped)
        present = ", ".join(f'{label}!=""' for label in labels)
        selectors.append(f"{match['name']}{{{present}}}" if present else match["name"])
    return sorted(set(selectors))
