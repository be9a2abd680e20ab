#!/usr/bin/env python3
"""A picture of the chart's Grafana dashboard from a Prometheus that holds its series: each
panel's queries run as range queries over a time range (template variables set to given
values, `$__rate_interval` worked out as Grafana does), drawn by tools/dashboard_svg.py into an
SVG, and converted to a PNG with rsvg-convert and made small with pngquant (Debian's
librsvg2-bin and pngquant, installed with apt-get when missing). Grafana itself is not needed.

    python tools/dashboard_picture.py --prometheus http://127.0.0.1:9090 --minutes 30 \\
        --var namespace=demo --out dashboard      # writes dashboard.svg and dashboard.png

`make dashboard-picture` runs it on a short run of real parts (tools/dashboard_run.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository's root is where `tools` is
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.dashboard_svg import Series, TimeRange, render_dashboard

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "charts" / "modelserving" / "files" / "grafana-dashboard.json"
# Grafana asks for about one point per pixel of a panel; a third of the picture's width is
# what a panel of 8 columns is.
MAX_POINTS = 500
# The commands that make the PNG, and the Debian packages that have them.
PNG_TOOLS = {"rsvg-convert": "librsvg2-bin", "pngquant": "pngquant"}
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class PanelQuery:
    """One target of a panel, ready for Prometheus."""

    panel_id: int
    expr: str
    legend_format: str


def query_step(span: TimeRange, scrape_interval: float) -> float:
    """Grafana's $__interval: the range over the points a panel shows, whole seconds, never
    under the data source's scrape interval."""
    return max(scrape_interval, math.ceil((span.end - span.start) / MAX_POINTS))


def rate_interval(step: float, scrape_interval: float) -> float:
    """Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval)."""
    return max(step + scrape_interval, 4 * scrape_interval)


def fill_variables(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with `$name` and `${name}` replaced by `values[name]`, longest names first (so
    that `$__rate_interval` is not read as `$__rate`)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr


def variable_values(
    dashboard: Mapping[str, Any],
    chosen: Mapping[str, str],
    span: TimeRange,
    step: float,
    scrape_interval: float,
) -> dict[str, str]:
    """Every variable a query may name: the dashboard's own (`chosen`, else All, its allValue)
    and Grafana's built-in ones."""
    values = {
        variable["name"]: chosen.get(variable["name"], variable.get("allValue") or ".*")
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "query"
    }
    values.update(
        {
            "__interval": f"{step:g}s",
            "__rate_interval": f"{rate_interval(step, scrape_interval):g}s",
            "__range": f"{span.end - span.start:.0f}s",
        }
    )
    return values


def panel_queries(dashboard: Mapping[str, Any], values: Mapping[str, str]) -> list[PanelQuery]:
    """The queries of every panel, in the dashboard's order, variables filled in."""
    return [
        PanelQuery(
            panel["id"], fill_variables(target["expr"], values), target.get("legendFormat", "")
        )
        for panel in dashboard.get("panels", [])
        for target in panel.get("targets", [])
        if target.get("expr") and not target.get("hide")
    ]


def legend_name(legend_format: str, labels: Mapping[str, str]) -> str:
    """What Grafana's legend shows for a series: the format with `{{label}}` filled in; with
    no format, the series' labels."""
    if legend_format:
        return _LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend_format).strip()
    shown = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels.get('__name__', '')}{{{shown}}}"


def series_of(result: Sequence[Mapping[str, Any]], legend_format: str, step: float) -> list[Series]:
    """Prometheus's matrix as series, a NaN put where a step has no value so that the line
    breaks there as in Grafana; sorted by name."""
    made = []
    for item in result:
        points: list[tuple[float, float]] = []
        for t, value in ((float(t), float(v)) for t, v in item["values"]):
            if points and t - points[-1][0] > 1.5 * step:
                points.append((points[-1][0] + step, math.nan))
            points.append((t, value))
        made.append(Series(legend_name(legend_format, item["metric"]), tuple(points)))
    return sorted(made, key=lambda s: s.name)


def range_query(prometheus: str, expr: str, span: TimeRange, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(
        {"query": expr, "start": span.start, "end": span.end, "step": step}
    )
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as resp:
        answer = json.loads(resp.read())
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer.get('errorType')}: {answer.get('error')}")
    return list(answer["data"]["result"])


def query_panels(
    prometheus: str,
    dashboard: Mapping[str, Any],
    span: TimeRange,
    chosen: Mapping[str, str],
    scrape_interval: float,
) -> dict[int, list[Series]]:
    """Every panel's series over `span`, by panel id."""
    step = query_step(span, scrape_interval)
    values = variable_values(dashboard, chosen, span, step, scrape_interval)
    results: dict[int, list[Series]] = {}
    for query in panel_queries(dashboard, values):
        found = series_of(
            range_query(prometheus, query.expr, span, step), query.legend_format, step
        )
        results.setdefault(query.panel_id, []).extend(found)
    return results


def install_missing(commands: Mapping[str, str]) -> None:
    """Install the Debian packages (command -> package) of the commands not on PATH."""
    missing = sorted(
        {package for command, package in commands.items() if not shutil.which(command)}
    )
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"missing: install Debian's {', '.join(missing)} (as root)")
    print(f"[picture] installing Debian's {', '.join(missing)}", file=sys.stderr)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*apt, "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env).returncode != 0:  # stale package lists
        subprocess.run([*apt, "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def svg_to_png(svg: Path, png: Path) -> None:
    """rsvg-convert (librsvg) draws the PNG; pngquant maps it to a palette, which keeps the
    picture a third of the size with no difference a reader sees (anti-aliased lines and text
    on a dark background have few colours that matter)."""
    install_missing(PNG_TOOLS)
    subprocess.run(["rsvg-convert", "--format", "png", "--output", str(png), str(svg)], check=True)
    subprocess.run(
        [
            "pngquant",
            "--quality",
            "80-100",
            "--speed",
            "1",
            "--strip",
            "--force",
            "--output",
            str(png),
            str(png),
        ],
        check=True,
    )


def make_picture(
    prometheus: str,
    span: TimeRange,
    chosen: Mapping[str, str],
    out: Path,
    note: str,
    scrape_interval: float = 15.0,
    dashboard_file: Path = DASHBOARD,
) -> tuple[Path, Path]:
    """Query, draw and write `out`.svg and `out`.png; both paths."""
    dashboard = json.loads(dashboard_file.read_text())
    results = query_panels(prometheus, dashboard, span, chosen, scrape_interval)
    svg, png = out.with_suffix(".svg"), out.with_suffix(".png")
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(render_dashboard(dashboard, results, span, chosen, note))
    svg_to_png(svg, png)
    return svg, png


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="Prometheus's base URL")
    parser.add_argument("--minutes", type=float, default=30, help="the last N minutes (30)")
    parser.add_argument("--end", type=float, help="end of the range, unix seconds (now)")
    parser.add_argument(
        "--var",
        type=_variable,
        action="append",
        default=[],
        help="a template variable's value, NAME=VALUE (others: All)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="the data source's scrape interval in seconds (15)",
    )
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument(
        "--out", type=Path, default=Path("dashboard"), help="writes OUT.svg and OUT.png"
    )
    args = parser.parse_args(argv)
    end = args.end or time.time()
    span = TimeRange(end - args.minutes * 60, end)
    note = f"Drawn by tools/dashboard_picture.py from {args.prometheus}"
    svg, png = make_picture(
        args.prometheus, span, dict(args.var), args.out, note, args.scrape_interval, args.dashboard
    )
    print(f"{svg}\n{png}")


if __name__ == "__main__":
    main()
