"""The report's picture: a hand-written SVG of the latency percentiles of each request-path
configuration (no plotting library needed), docs/benchmarks-latency.svg."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from bench.harness.stats import mean
from bench.report.results import Pass, PathPart, Results

SVG_NAME = "benchmarks-latency.svg"


def latency_series(part: PathPart, rate: str = "1000") -> list[tuple[str, list[float]]]:
    """(configuration, [p50, p90, p99] averaged over the runs that succeeded), in ms."""
    series = []
    for name in part.configurations:
        ok = [r for r in part.results[name] if isinstance(r, Pass)]
        if ok:
            series.append(
                (
                    name,
                    [
                        mean([getattr(r.latency[rate], f"{p}_ms") for r in ok])
                        for p in ("p50", "p90", "p99")
                    ],
                )
            )
    return series


def render_svg(series: list[tuple[str, list[float]]], title: str) -> str:
    """Grouped horizontal bars on a log scale (tails differ from medians by orders of
    magnitude): one group per configuration, a bar per percentile."""
    colors = ("#4c78a8", "#f58518", "#e45756")
    labels = ("p50", "p90", "p99")
    row, bar, left, width = 54, 14, 250, 460
    height = 70 + row * len(series) + 30
    values = [v for _, vs in series for v in vs if v > 0] or [1.0]
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    if high <= low:
        high = low * 10

    def x(value: float) -> float:
        ratio = (math.log10(max(value, low)) - math.log10(low)) / (
            math.log10(high) - math.log10(low)
        )
        return left + width * ratio

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 110}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for i, label in enumerate(labels):
        lx = left + i * 80
        out.append(f'<rect x="{lx}" y="34" width="12" height="12" fill="{colors[i]}"/>')
        out.append(f'<text x="{lx + 16}" y="45">{label}</text>')
    for j, (name, vals) in enumerate(series):
        y0 = 62 + j * row
        out.append(f'<text x="{left - 8}" y="{y0 + 24}" text-anchor="end">{escape(name)}</text>')
        for i, value in enumerate(vals):
            y = y0 + i * bar
            w = max(x(value) - left, 1)
            out.append(
                f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{colors[i]}"/>'
            )
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 3}">{value:.3f} ms</text>')
    axis_y = 62 + row * len(series)
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + width}" y2="{axis_y}" stroke="#444"/>')
    tick = low
    while tick <= high * 1.001:
        tx = x(tick)
        out.append(
            f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 4}" stroke="#444"/>'
        )
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g} ms</text>')
        tick *= 10
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(results: Results, path: Path) -> None:
    part = results.parts.request_path
    if not part:
        return
    series = latency_series(part)
    if series:
        title = "Latency at 1,000 rps (vegeta), mean of the runs, log scale"
        path.write_text(render_svg(series, title))
