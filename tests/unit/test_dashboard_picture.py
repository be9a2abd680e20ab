"""The dashboard picture's drawing and queries (tools/dashboard_svg.py, tools/dashboard_picture.py)
on a small dashboard and fixed results: what a reader of the picture checks (each panel's title,
a line per series with every point of its data, the legend's names and values in the panel's
unit, panels where Grafana's grid puts them) and the queries as Grafana would send them."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from tools.dashboard_picture import (
    DASHBOARD,
    fill_variables,
    legend_name,
    panel_queries,
    query_step,
    rate_interval,
    series_of,
    variable_values,
)
from tools.dashboard_svg import (
    WIDTH,
    Series,
    TimeRange,
    axis_ticks,
    format_value,
    render_dashboard,
)

SVG = "{http://www.w3.org/2000/svg}"
SPAN = TimeRange(1_700_000_000, 1_700_000_300)
DASHBOARD_SMALL = {
    "title": "Small",
    "templating": {"list": [{"name": "namespace", "label": "Namespace", "type": "query"}]},
    "panels": [
        {"type": "row", "title": "Traffic", "id": 1, "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}},
        {
            "type": "timeseries",
            "title": "Requests per second",
            "id": 2,
            "gridPos": {"h": 8, "w": 12, "x": 0, "y": 1},
            "fieldConfig": {"defaults": {"unit": "reqps", "custom": {"fillOpacity": 10}}},
            "targets": [{"expr": "sum by (version) (rate(x[$__rate_interval]))", "refId": "A"}],
        },
        {
            "type": "stat",
            "title": "Spool size",
            "id": 3,
            "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},
            "fieldConfig": {"defaults": {"unit": "bytes"}},
            "targets": [{"expr": "sum(spool_bytes)", "refId": "A"}],
        },
    ],
}


def steady(value: float, count: int, every: float = 10.0) -> tuple[tuple[float, float], ...]:
    return tuple((SPAN.start + i * every, value + i) for i in range(count))


RESULTS = {
    2: [Series("v1", steady(20.0, 30)), Series("v2", steady(2.0, 25))],
    3: [Series("payments/fraud", ((SPAN.start, 1024.0), (SPAN.end, 1.5 * 2**20)))],
}


def drawn(results=RESULTS, dashboard=DASHBOARD_SMALL) -> ET.Element:
    svg = render_dashboard(dashboard, results, SPAN, {"namespace": "payments"}, "made in a test")
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def lines(root: ET.Element) -> dict[str, list[list[str]]]:
    """Each series' polylines (one per unbroken run), as lists of "x,y" points."""
    found: dict[str, list[list[str]]] = {}
    for line in root.iter(f"{SVG}polyline"):
        found.setdefault(line.get("data-series", ""), []).append(line.get("points", "").split())
    return found


def test_every_panel_title_and_the_dashboard_title_and_variables_are_shown() -> None:
    shown = texts(drawn())
    for title in ("Small", "Traffic", "Requests per second", "Spool size", "made in a test"):
        assert title in shown
    assert "Namespace: payments" in shown


def test_each_series_is_a_line_through_every_point_of_its_data() -> None:
    drawn_lines = lines(drawn())
    assert {name: [len(run) for run in runs] for name, runs in drawn_lines.items()} == {
        "v1": [30],
        "v2": [25],
    }
    # Time runs left to right across the panel (the left half of the picture).
    xs = [float(point.split(",")[0]) for point in drawn_lines["v1"][0]]
    assert xs == sorted(xs) and 0 < xs[0] < xs[-1] < WIDTH / 2


def test_a_missing_value_breaks_the_line_as_grafana_does() -> None:
    after = tuple((t + 60, v) for t, v in steady(1.0, 4))
    points = (*steady(1.0, 5), (SPAN.start + 50, math.nan), *after)
    runs = lines(drawn({2: [Series("gappy", points)]}))["gappy"]
    assert [len(run) for run in runs] == [5, 4]


def test_the_legend_names_each_series_with_its_last_and_max_in_the_panels_unit() -> None:
    shown = texts(drawn())
    assert {"v1", "v2"} <= set(shown)
    # v1 goes from 20 to 49 req/s: its last and its max are both 49.
    assert shown.count("49 req/s") == 2
    assert "26 req/s" in shown  # v2's last and max: 2 + 24


def test_a_stat_panel_shows_its_last_value_in_its_unit() -> None:
    shown = texts(drawn())
    assert "1.5 MiB" in shown and "payments/fraud" in shown


def test_panels_are_where_grafanas_grid_puts_them() -> None:
    frames = [r for r in drawn().iter(f"{SVG}rect") if r.get("rx") == "3"]
    (left, right) = sorted(frames, key=lambda r: float(r.get("x", 0)))
    assert float(left.get("x", 0)) < 20 and float(right.get("x", 0)) == pytest.approx(
        WIDTH / 2, abs=10
    )
    assert left.get("y") == right.get("y") and left.get("height") == right.get("height")


def test_a_panel_without_series_says_no_data() -> None:
    assert texts(drawn({})).count("No data") == 2


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.0123, "s", "12.3 ms"),
        (0.000250, "s", "250 µs"),
        (2.47, "s", "2.47 s"),
        (0.25, "percentunit", "25%"),
        (1536, "bytes", "1.5 KiB"),
        (1500, "reqps", "1.5 K req/s"),
        (0.667, "ops", "0.667 ops/s"),
        (3, "short", "3"),
        (math.nan, "s", "-"),
    ],
)
def test_values_are_shown_in_the_panels_unit(value: float, unit: str, shown: str) -> None:
    assert format_value(value, unit) == shown


def test_axis_ticks_are_round_numbers_of_the_unit() -> None:
    assert axis_ticks(0, 49) == [0, 20, 40, 60]
    assert axis_ticks(0, 0.8) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert [format_value(t, "bytes") for t in axis_ticks(0, 400 * 1024, unit="bytes")] == [
        "0 B",
        "100 KiB",
        "200 KiB",
        "300 KiB",
        "400 KiB",
    ]


def test_the_charts_dashboard_is_drawn_whole() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    shown = texts(drawn({}, dashboard))
    assert {panel["title"] for panel in dashboard["panels"]} <= set(shown)
    assert not [text for text in shown if "not drawn" in text]


# ---- the queries ------------------------------------------------------------------------------


def test_rate_interval_and_step_are_grafanas() -> None:
    assert rate_interval(step=1, scrape_interval=1) == 4  # four scrapes at least
    assert rate_interval(step=60, scrape_interval=15) == 75  # a step plus a scrape
    assert query_step(TimeRange(0, 300), scrape_interval=1) == 1
    assert query_step(TimeRange(0, 6 * 3600), scrape_interval=15) == 44  # 21600 s / 500 points


def test_variables_are_the_chosen_values_else_all_and_grafanas_own() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    values = variable_values(dashboard, {"namespace": "payments"}, TimeRange(0, 300), 2, 1)
    assert values["namespace"] == "payments" and values["serving"] == ".*"
    assert values["__rate_interval"] == "4s" and values["__interval"] == "2s"
    queries = panel_queries(dashboard, values)
    assert len(queries) == sum(len(p.get("targets", [])) for p in dashboard["panels"])
    assert not [q.expr for q in queries if "$" in q.expr]
    assert 'namespace=~"payments"' in queries[0].expr and "[4s]" in queries[0].expr


def test_fill_variables_takes_the_longest_name_first() -> None:
    values = {"__rate": "WRONG", "__rate_interval": "8s", "serving": "fraud"}
    assert fill_variables('rate(x{s=~"${serving}"}[$__rate_interval])', values) == (
        'rate(x{s=~"fraud"}[8s])'
    )


def test_legend_names_fill_grafanas_legend_format() -> None:
    labels = {"namespace": "payments", "serving": "fraud", "version": "2"}
    assert legend_name("{{namespace}}/{{ serving }} v{{version}}", labels) == "payments/fraud v2"
    assert legend_name("", {"__name__": "up", "job": "x"}) == 'up{job="x"}'


def test_prometheus_matrices_become_series_with_a_gap_where_a_step_has_no_value() -> None:
    matrix = [
        {"metric": {"version": "2"}, "values": [[0, "1"], [1, "2"], [5, "3"]]},
        {"metric": {"version": "1"}, "values": [[0, "NaN"], [1, "4"]]},
    ]
    (one, two) = series_of(matrix, "v{{version}}", step=1)
    assert one.name == "v1" and math.isnan(one.points[0][1])
    assert two.name == "v2" and [v for _, v in two.points][:2] == [1.0, 2.0]
    assert math.isnan(two.points[2][1]) and two.points[-1] == (5.0, 3.0)
