"""A Grafana dashboard drawn as SVG from query results: the panels where Grafana's grid puts them
(`gridPos`, 24 columns, rows of 30 px), each with its title, time series as lines with a legend
table (last and max), stat panels as their last value, every value in the panel's unit
(`fieldConfig.defaults.unit`). Pure: a dashboard and results in, SVG text out; the queries are
run by tools/dashboard_picture.py.

Only what the chart's dashboard uses is drawn (row, timeseries, stat panels; Grafana's dark
theme); any other panel type is drawn as its title and a note saying it is not drawn.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

# Grafana's grid: 24 columns, a height unit of 30 px, 8 px between panels.
COLUMNS = 24
ROW_HEIGHT = 30
MARGIN = 8
WIDTH = 1500
HEADER = 56  # the dashboard's title bar
FOOTER = 28  # the note saying how the picture was made
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
# Grafana's dark theme and its classic palette, in its order.
BACKGROUND, PANEL, BORDER = "#111217", "#181b1f", "#2c3235"
TEXT, MUTED, GRID = "#ccccdc", "#8e8e9e", "#2a2d33"
PALETTE = (
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
)
LEGEND_LINE = 15
MAX_LEGEND_SHARE = 0.45  # of a panel's body: the graph keeps the rest


@dataclass(frozen=True)
class Series:
    """One line of a panel: its legend name and its (unix time, value) points, NaN for none."""

    name: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class TimeRange:
    start: float  # unix seconds
    end: float


# ---- values in a panel's unit ----------------------------------------------------------------

_SI = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
_IEC = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))
_RATE_SUFFIX = {"reqps": " req/s", "ops": " ops/s", "cps": " c/s", "rps": " rd/s", "wps": " wr/s"}


def _number(value: float) -> str:
    """A value with the few decimals Grafana shows: 3 significant digits, no trailing zeros."""
    if value == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _short(value: float) -> str:
    for size, suffix in _SI:
        if abs(value) >= size:
            return f"{_number(value / size)} {suffix}"
    return _number(value)


def format_value(value: float, unit: str) -> str:
    """`value` as Grafana shows it in `unit` (the units the chart's dashboard uses; any other
    is shown as a short number followed by the unit's name)."""
    if math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{_number(value * 100)}%"
    if unit == "percent":
        return f"{_number(value)}%"
    if unit == "bytes":
        for size, suffix in _IEC:
            if abs(value) >= size:
                return f"{_number(value / size)} {suffix}"
        return f"{_number(value)} B"
    if unit == "s":
        if value == 0:
            return "0 s"
        for limit, scale, suffix in ((1e-3, 1e6, "µs"), (1, 1e3, "ms"), (60, 1, "s")):
            if abs(value) < limit:
                return f"{_number(value * scale)} {suffix}"
        if abs(value) < 3600:
            return f"{_number(value / 60)} min"
        return f"{_number(value / 3600)} hour"
    if unit in _RATE_SUFFIX:
        return _short(value) + _RATE_SUFFIX[unit]
    if unit in ("short", "none", ""):
        return _short(value)
    return f"{_short(value)} {unit}"


def axis_ticks(low: float, high: float, count: int = 4, unit: str = "") -> list[float]:
    """Round values from `low` to at least `high`, about `count` steps apart (1, 2, 5 x 10^n;
    of KiB, MiB, ... for bytes, so that the labels are round too)."""
    if high <= low:
        high = low + 1
    if unit == "bytes":
        scale = next((size for size, _ in _IEC if max(abs(low), abs(high)) >= size), 1)
        if scale > 1:
            return [tick * scale for tick in axis_ticks(low / scale, high / scale, count)]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - 1e-12 * step:
        ticks.append(first + len(ticks) * step)
    return ticks


# ---- drawing ---------------------------------------------------------------------------------


def _text(x: float, y: float, text: str, size: int = 12, color: str = TEXT, **attrs: str) -> str:
    extra = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{value}"' for key, value in attrs.items()
    )
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{color}"{extra}>'
        f"{escape(text)}</text>"
    )


def _clip(text: str, width: float, size: int) -> str:
    """`text` cut to what fits in `width` px at `size` (an average glyph is 0.58 em wide)."""
    fits = max(1, int(width / (size * 0.58)))
    return text if len(text) <= fits else text[: fits - 1] + "…"


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float


def panel_box(grid_pos: Mapping[str, int], width: float = WIDTH, top: float = HEADER) -> Box:
    """Where Grafana puts a panel of this gridPos, in px."""
    column = (width - MARGIN) / COLUMNS
    return Box(
        x=MARGIN + grid_pos["x"] * column,
        y=top + grid_pos["y"] * (ROW_HEIGHT + MARGIN),
        w=grid_pos["w"] * column - MARGIN,
        h=grid_pos["h"] * (ROW_HEIGHT + MARGIN) - MARGIN,
    )


def _unit(panel: Mapping[str, Any]) -> str:
    return str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"))


def _values(series: Series) -> list[float]:
    return [v for _, v in series.points if not math.isnan(v)]


def _row(panel: Mapping[str, Any], box: Box) -> list[str]:
    return [_text(box.x, box.y + 20, panel.get("title", ""), 15, TEXT, font_weight="bold")]


def _frame(panel: Mapping[str, Any], box: Box) -> list[str]:
    title = _clip(panel.get("title", ""), box.w - 16, 13)
    return [
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
        f'rx="3" fill="{PANEL}" stroke="{BORDER}"/>',
        _text(box.x + 8, box.y + 19, title, 13, TEXT, font_weight="bold"),
    ]


def _time_labels(span: TimeRange, left: float, width: float, bottom: float) -> list[str]:
    """HH:MM (UTC) labels under the graph, about every 100 px, at whole steps of time."""
    seconds = span.end - span.start
    step = next(
        (
            s
            for s in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
            if seconds / s <= max(2.0, width / 100)
        ),
        14400,
    )
    marks = []
    t = math.ceil(span.start / step) * step
    while t <= span.end:
        x = left + (t - span.start) / seconds * width
        if not left + 20 < x < left + width - 20:  # a label at an edge runs into the axis's
            t += step
            continue
        when = datetime.datetime.fromtimestamp(t, datetime.UTC)
        label = when.strftime("%H:%M:%S" if step < 60 else "%H:%M")
        marks.append(_text(x, bottom + 14, label, 10, MUTED, text_anchor="middle"))
        t += step
    return marks


def _timeseries(
    panel: Mapping[str, Any], box: Box, series: Sequence[Series], span: TimeRange
) -> list[str]:
    unit = _unit(panel)
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    line_width = custom.get("lineWidth", 1)
    fill = custom.get("fillOpacity", 0) / 100
    body_top, body_bottom = box.y + 28, box.y + box.h - 6
    shown_rows = min(
        len(series), int((body_bottom - body_top) * MAX_LEGEND_SHARE / LEGEND_LINE) - 1
    )
    hidden = len(series) - shown_rows
    legend_rows = shown_rows + (1 if hidden else 0)
    legend_top = body_bottom - (legend_rows + 1) * LEGEND_LINE if series else body_bottom
    values = [v for s in series for v in _values(s)]
    low = min([0.0, *values])
    high = max([*values, 0.0])
    ticks = axis_ticks(low, high if high > low else low + 1, unit=unit)
    low, high = ticks[0], ticks[-1]
    labels = [format_value(t, unit) for t in ticks]
    left = box.x + 14 + max(len(label) for label in labels) * 6.2
    right = box.x + box.w - 12
    top, bottom = body_top + 6, legend_top - 22
    width, height = right - left, bottom - top
    out = []

    def x_of(t: float) -> float:
        return left + (t - span.start) / (span.end - span.start) * width

    def y_of(v: float) -> float:
        return bottom - (v - low) / (high - low) * height

    for tick, label in zip(ticks, labels, strict=True):
        y = y_of(tick)
        out.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{right:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
        )
        out.append(_text(left - 6, y + 4, label, 10, MUTED, text_anchor="end"))
    out += _time_labels(span, left, width, bottom)
    if not series:
        out.append(
            _text(box.x + box.w / 2, top + height / 2, "No data", 14, MUTED, text_anchor="middle")
        )
    for index, one in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        for run in _runs(one.points):
            points = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in run)
            if fill and len(run) > 1:
                base = y_of(max(low, 0.0))
                area = (
                    f"{x_of(run[0][0]):.1f},{base:.1f} {points} {x_of(run[-1][0]):.1f},{base:.1f}"
                )
                out.append(f'<polygon points="{area}" fill="{color}" fill-opacity="{fill}"/>')
            out.append(
                f'<polyline class="series" data-series="{escape(one.name)}" '
                f'points="{points}" fill="none" stroke="{color}" '
                f'stroke-width="{line_width}"/>'
            )
    out += _legend(series[:shown_rows], hidden, unit, Box(box.x + 8, legend_top, box.w - 16, 0))
    return out


def _runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points in runs without NaN: Grafana breaks a line where a value is missing."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if math.isnan(v):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]


def _legend(series: Sequence[Series], hidden: int, unit: str, at: Box) -> list[str]:
    """Grafana's table legend: a colour mark and name, then the last and the max value."""
    if not series:
        return []
    last_x, max_x = at.x + at.w - 80, at.x + at.w
    out = [
        _text(last_x, at.y + 11, "Last *", 10, MUTED, text_anchor="end"),
        _text(max_x, at.y + 11, "Max", 10, MUTED, text_anchor="end"),
    ]
    for index, one in enumerate(series):
        y = at.y + (index + 1) * LEGEND_LINE
        values = _values(one)
        color = PALETTE[index % len(PALETTE)]
        out.append(f'<rect x="{at.x:.1f}" y="{y + 5:.1f}" width="12" height="3" fill="{color}"/>')
        name = _clip(one.name, last_x - at.x - 96, 11)
        out.append(_text(at.x + 18, y + 11, name, 11, TEXT, class_="legend"))
        last = format_value(values[-1], unit) if values else "-"
        peak = format_value(max(values), unit) if values else "-"
        out.append(_text(last_x, y + 11, last, 11, TEXT, text_anchor="end"))
        out.append(_text(max_x, y + 11, peak, 11, TEXT, text_anchor="end"))
    if hidden:
        y = at.y + (len(series) + 1) * LEGEND_LINE
        out.append(_text(at.x + 18, y + 11, f"and {hidden} more series", 11, MUTED))
    return out


def _stat(panel: Mapping[str, Any], box: Box, series: Sequence[Series]) -> list[str]:
    """Each series' last value, large, side by side, its name under it."""
    unit = _unit(panel)
    if not series:
        return [
            _text(
                box.x + box.w / 2,
                box.y + box.h / 2 + 14,
                "No data",
                14,
                MUTED,
                text_anchor="middle",
            )
        ]
    out = []
    cell = box.w / len(series)
    for index, one in enumerate(series):
        values = _values(one)
        x = box.x + cell * (index + 0.5)
        value = format_value(values[-1], unit) if values else "-"
        size = int(min(40, box.h / 3, cell / max(3, len(value)) * 1.6))
        color = PALETTE[index % len(PALETTE)]
        out.append(
            _text(
                x,
                box.y + box.h / 2 + size / 2,
                value,
                size,
                color,
                text_anchor="middle",
                font_weight="bold",
            )
        )
        name = _clip(one.name, cell - 8, 11)
        out.append(
            _text(x, box.y + box.h - 10, name, 11, MUTED, text_anchor="middle", class_="legend")
        )
    return out


def _variables(dashboard: Mapping[str, Any], values: Mapping[str, str]) -> str:
    shown = [
        f"{v.get('label') or v['name']}: {values.get(v['name'], 'All')}"
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    ]
    return "  ·  ".join(shown)


def render_dashboard(
    dashboard: Mapping[str, Any],
    results: Mapping[int, Sequence[Series]],
    span: TimeRange,
    variables: Mapping[str, str],
    note: str,
) -> str:
    """The dashboard as SVG text: `results` are each panel's series by the panel's id,
    `variables` the values its template variables were given, `note` the line at the bottom."""
    panels = dashboard.get("panels", [])
    bottom = max(
        (panel_box(p["gridPos"]).y + panel_box(p["gridPos"]).h for p in panels), default=HEADER
    )
    height = bottom + MARGIN + FOOTER
    start = datetime.datetime.fromtimestamp(span.start, datetime.UTC)
    end = datetime.datetime.fromtimestamp(span.end, datetime.UTC)
    when = f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} UTC"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="{FONT}">',
        f'<rect width="{WIDTH}" height="{height:.0f}" fill="{BACKGROUND}"/>',
        _text(MARGIN, 26, dashboard.get("title", ""), 18, TEXT, font_weight="bold"),
        _text(WIDTH - MARGIN, 26, when, 12, MUTED, text_anchor="end"),
        _text(MARGIN, 46, _variables(dashboard, variables), 12, MUTED),
    ]
    for panel in panels:
        box = panel_box(panel["gridPos"])
        kind = panel.get("type")
        if kind == "row":
            out += _row(panel, box)
            continue
        out += _frame(panel, box)
        series = results.get(panel["id"], ())
        if kind == "timeseries":
            out += _timeseries(panel, box, series, span)
        elif kind == "stat":
            out += _stat(panel, box, series)
        else:
            out.append(_text(box.x + 8, box.y + 44, f"({kind} panels are not drawn)", 11, MUTED))
    out.append(_text(MARGIN, height - 10, note, 11, MUTED))
    out.append("</svg>")
    return "\n".join(out) + "\n"
