"""Section 1 of the report, the request path: saturation and latency of every configuration
beside DESIGN's references, what several model versions cost beside one, and what traces cost
beside none."""

from __future__ import annotations

from bench.parts.sidecar import (
    ONE_VERSION,
    ROUTINGS,
    TRACING_RATIOS,
    tracing_configuration,
    versions_configuration,
)
from bench.report.cells import both, fmt, over
from bench.report.results import Pass, PathPart

# The references DESIGN.md measured, beside the configurations of the same name.
REFERENCES = {
    "nginx reverse proxy": ">= 80,000 rps/core; +0.10 / +0.17 ms",
    "KServe agent, logger off": "21,100 rps/core; +0.12 / +0.55 ms; 90 MB",
    "KServe agent, logger on": "14,000 rps/core; +0.14 / +5.07 ms; 2.35 GB peak",
    "bare aiohttp proxy": "8,600 rps/core; +0.26 / +0.77 ms",
}


def request_path_tables(part: PathPart) -> list[str]:
    results = part.results
    lines = [
        "### Saturation (wrk, 1 thread, 64 connections, 5 s after a 1 s warm-up)",
        "",
        "| configuration | requests/s | proxy's share of its core | requests/s per core "
        "| peak RSS (MiB) | DESIGN reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in part.configurations:
        runs = results[name]
        lines.append(
            f"| {name} | {both(runs, lambda r: round(r.saturation.rps))} "
            f"| {both(runs, lambda r: r.cpu_share)} "
            f"| {both(runs, lambda r: r.rps_per_core)} "
            f"| {both(runs, lambda r: r.rss_peak_mib, 1)} "
            f"| {REFERENCES.get(name, '')} |"
        )
    for rate in ("200", "1000"):
        lines += [
            "",
            f"### Latency at {int(rate):,} rps (vegeta, 5 s), ms: measured p50 / p90 / p99 "
            "and added over direct",
            "",
            "| configuration | p50 | p90 | p99 | added p50 | added p90 | added p99 | success |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in part.configurations:
            runs = results[name]
            cells = [
                both(runs, lambda r, p=p, rate=rate: getattr(r.latency[rate], f"{p}_ms"), 3)
                for p in ("p50", "p90", "p99")
            ]
            cells += [
                both(runs, lambda r, p=p, rate=rate: getattr(r.added_ms[rate], p), 3)
                for p in ("p50", "p90", "p99")
            ]
            cells.append(both(runs, lambda r, rate=rate: r.latency[rate].success, 3))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def cpu_us_per_request(run: Pass) -> float:
    """CPU µs per request at saturation: the inverse of requests/s per core."""
    return 1e6 / run.rps_per_core


def versions_lines(part: PathPart) -> list[str]:
    """What several model versions cost per request beside one version, pass by pass: CPU at
    saturation and at 1,000 rps, and the added p99 at 1,000 rps. Empty when the variants were
    not measured (no broker: the log-on sidecar did not run)."""
    results = part.results
    names = [versions_configuration(v) for v in ROUTINGS if versions_configuration(v) in results]
    base = results.get(ONE_VERSION)
    if not names or not base:
        return []
    lines = [
        "### Several model versions: the cost of the split and of a 10% shadow",
        "",
        f"Beside the one-version sidecar ({ONE_VERSION}), in the same passes: the sidecar over "
        "versions 1 and 2 at 90/10 (a hash of the request id, a table lookup), then the same "
        "split with version 3 as a 10% shadow (a second upstream request and a second record "
        "for one request in ten, after the caller's answer). CPU per request is the sidecar's "
        "CPU time over the requests, at saturation (wrk) and at 1,000 rps (vegeta); "
        "over one version is the difference in the same pass.",
        "",
        "| configuration | CPU µs/request, saturated | over one version | CPU µs/request at "
        "1,000 rps | over one version | added p99 at 1,000 rps, ms | over one version |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def at_rate(run: Pass) -> float:
        return float(run.cpu_us_at_rate["1000"])

    def p99(run: Pass) -> float:
        return float(run.added_ms["1000"].p99)  # type: ignore[index]  # None: shown as "-"

    for name in [ONE_VERSION, *names]:
        runs = results[name]
        same = name == ONE_VERSION
        lines.append(
            f"| {name} | {both(runs, cpu_us_per_request, 1)} "
            f"| {'' if same else over(runs, base, cpu_us_per_request, 1)} "
            f"| {both(runs, at_rate, 1)} | {'' if same else over(runs, base, at_rate, 1)} "
            f"| {both(runs, p99, 3)} | {'' if same else over(runs, base, p99, 3)} |"
        )
    return lines


# Issue 32's targets for the CPU a request's traces add over the sidecar with none.
TRACING_TARGETS = {"0%": "+0", "1%": "<= +3", "100%": "measured"}


def tracing_lines(part: PathPart) -> list[str]:
    """What traces cost per request beside the log-on sidecar with no collector, pass by pass:
    CPU at saturation and at 1,000 rps, and the added p99 at 1,000 rps. Empty when the tracing
    configurations were not measured (no broker, or Jaeger could not start)."""
    results = part.results
    labels = [label for label in TRACING_RATIOS if tracing_configuration(label) in results]
    base = results.get(ONE_VERSION)
    if not labels or not base:
        return []
    lines = [
        "### Traces: off, and exported to a real Jaeger at 0%, 1% and 100% sampling",
        "",
        f"Beside the log-on sidecar with no collector ({ONE_VERSION}: tracing off), in the same "
        "passes: the same sidecar with `tracing.endpoint` naming a real Jaeger v2 (all in one, "
        "spans in memory, on the load core) and `tracing.ratio` 0, 0.01 and 1. The load sends "
        "no traceparent, so the ratio is the share of requests sampled; a sampled request has "
        "four spans (the server span, authenticate, the call to TF Serving, the inference "
        "log's spool write), exported by the sidecar's own thread, whose CPU is counted. CPU "
        "per request is the sidecar's CPU time over the requests, at saturation (wrk) and at "
        "1,000 rps (vegeta); over off is the difference in the same pass. The target is the "
        "saturated figure's.",
        "",
        "| configuration | CPU µs/request, saturated | over off | target | CPU µs/request at "
        "1,000 rps | over off | added p99 at 1,000 rps, ms | over off |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def at_rate(run: Pass) -> float:
        return float(run.cpu_us_at_rate["1000"])

    def p99(run: Pass) -> float:
        return float(run.added_ms["1000"].p99)  # type: ignore[index]  # None: shown as "-"

    lines.append(
        f"| {ONE_VERSION} | {both(base, cpu_us_per_request, 1)} | | "
        f"| {both(base, at_rate, 1)} | | {both(base, p99, 3)} | |"
    )
    for label in labels:
        runs = results[tracing_configuration(label)]
        lines.append(
            f"| {tracing_configuration(label)} | {both(runs, cpu_us_per_request, 1)} "
            f"| {over(runs, base, cpu_us_per_request, 1)} | {TRACING_TARGETS[label]} "
            f"| {both(runs, at_rate, 1)} | {over(runs, base, at_rate, 1)} "
            f"| {both(runs, p99, 3)} | {over(runs, base, p99, 3)} |"
        )
    passes = [run for run in base if isinstance(run, Pass)]
    if len(passes) >= 2:
        spread = max(map(cpu_us_per_request, passes)) - min(map(cpu_us_per_request, passes))
        lines += [
            "",
            f"The noise to read these against: tracing off's own passes differ by "
            f"{fmt(spread, 1)} µs/request saturated. For a ratio in one run with the order "
            'alternated, `make bench-sidecar ARGS="--tracing --latency --rounds 4"`.',
        ]
    return lines
