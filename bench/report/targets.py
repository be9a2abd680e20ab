"""The report's first table: DESIGN.md's targets for our sidecar (auth on, log on) and the
operator, each judged on every run that measured it."""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.parts.sidecar import BUFFERED, ONE_VERSION
from bench.report.cells import fmt
from bench.report.results import (
    BrokerOutage,
    Crash,
    CrashPart,
    LogPart,
    LogRun,
    OperatorRun,
    OutagePart,
    Pass,
    Results,
)

TARGETS = {
    "rps_per_core": 7000,
    "added_p50_ms_at_1000": 0.25,
    "added_p99_ms_at_1000": 1.0,
    "rss_mib": 150,
    "records_lost": 0,
    "log_records_per_s": 15000,
    "log_cpu_us_per_request": 20,
    "ours_over_kserve_logger": 1.0,
    "spooled_over_buffered": 0.97,
    "spooled_added_p99_over_buffered_ms": 0.3,
    "operator_ready_1000_s": 60,
    "operator_restart_writes": 0,
    "operator_rss_mib": 250,
}
OURS = ONE_VERSION  # the log on with the defaults: durability spooled
OURS_LOG_OFF = "sidecar, apiKey, log off"
KSERVE_LOGGER = "KServe agent, logger on"

Row = tuple[str, str, list[float], str]  # (what, target, measured values, verdict)


def measured_passes(results: Results, name: str) -> list[Pass | None]:
    """A request-path configuration's passes, a failed one as None (so that pass i of two
    configurations pair)."""
    part = results.parts.request_path
    runs = part.results.get(name, []) if part else []
    return [r if isinstance(r, Pass) and r.rps_per_core else None for r in runs]


def per_pass(
    results: Results, a: str, b: str, combine: Callable[[Pass, Pass], float]
) -> list[float]:
    """combine(pass of a, pass of b) for each pass where both were measured."""
    return [
        combine(x, y)
        for x, y in zip(measured_passes(results, a), measured_passes(results, b), strict=False)
        if x is not None and y is not None
    ]


def log_cpu_us_per_request(on: Pass, off: Pass) -> float:
    """The log's own CPU per request: CPU µs per request with it on minus with it off."""
    return 1e6 / on.rps_per_core - 1e6 / off.rps_per_core


def _verdict(values: list[float], ok: Callable[[float], bool]) -> str:
    if not values:
        return "not measured"
    met = [ok(v) for v in values]
    return "met" if all(met) else "**short**" if not any(met) else "mixed"


def target_rows(results: Results) -> list[Row]:
    """(what, target, measured values, verdict) for DESIGN's targets of our sidecar."""
    parts = results.parts
    rows: list[Row] = []

    def add(what: str, target: str, values: list[float], ok: Callable[[float], bool]) -> None:
        rows.append((what, target, values, _verdict(values, ok)))

    path = parts.request_path
    ours = [r for r in (path.results.get(OURS, []) if path else []) if isinstance(r, Pass)]
    add(
        "requests/s per core (apiKey, log on)",
        ">= 7,000",
        [r.rps_per_core for r in ours],
        lambda v: v >= TARGETS["rps_per_core"],
    )
    add(
        "added p50 at 1,000 rps, ms",
        "<= +0.25",
        [r.added_ms["1000"].p50 for r in ours if r.added_ms is not None],
        lambda v: v <= TARGETS["added_p50_ms_at_1000"],
    )
    add(
        "added p99 at 1,000 rps, ms",
        "<= +1.0",
        [r.added_ms["1000"].p99 for r in ours if r.added_ms is not None],
        lambda v: v <= TARGETS["added_p99_ms_at_1000"],
    )
    add(
        "the log's own CPU per request (log on minus log off), µs",
        "<= 20",
        per_pass(results, OURS, OURS_LOG_OFF, log_cpu_us_per_request),
        lambda v: v <= TARGETS["log_cpu_us_per_request"],
    )
    add(
        "requests/s per core, log on, over KServe's agent with its logger",
        ">= 1.0",
        per_pass(results, OURS, KSERVE_LOGGER, lambda o, k: o.rps_per_core / k.rps_per_core),
        lambda v: v >= TARGETS["ours_over_kserve_logger"],
    )
    add(
        "requests/s per core, spooled (the default) over buffered",
        f">= {TARGETS['spooled_over_buffered']}",
        per_pass(results, OURS, BUFFERED, lambda s, b: s.rps_per_core / b.rps_per_core),
        lambda v: v >= TARGETS["spooled_over_buffered"],
    )
    add(
        "added p99 at 1,000 rps, spooled (the default) minus buffered, ms",
        f"<= +{TARGETS['spooled_added_p99_over_buffered_ms']}",
        [
            s.added_ms["1000"].p99 - b.added_ms["1000"].p99
            for s, b in zip(
                measured_passes(results, OURS), measured_passes(results, BUFFERED), strict=False
            )
            if s is not None and b is not None and s.added_ms and b.added_ms
        ],
        lambda v: v <= TARGETS["spooled_added_p99_over_buffered_ms"],
    )
    add(
        "peak RSS at saturation, MiB",
        "<= 150",
        [r.rss_peak_mib for r in ours],
        lambda v: v <= TARGETS["rss_mib"],
    )
    outage = parts.outage.sidecar if isinstance(parts.outage, OutagePart) else None
    add(
        "records lost, broker down 10 s at 1,000 rps",
        "0",
        [outage.records_lost] if isinstance(outage, BrokerOutage) else [],
        lambda v: v == 0,
    )
    crash = parts.crash if isinstance(parts.crash, CrashPart) else CrashPart()
    add(
        "answered requests whose record was lost, sidecar SIGKILL at 1,000 rps, spooled "
        "(the default)",
        "0",
        [crash.spooled.records_lost] if isinstance(crash.spooled, Crash) else [],
        lambda v: v == 0,
    )
    resent = [c for c in (crash.buffered, crash.spooled) if isinstance(c, Crash)]
    add(
        "records sent twice after that SIGKILL (buffered; spooled)",
        "<= in flight",
        [c.records_resent for c in resent],
        lambda v: all(c.records_resent <= c.max_in_flight_records for c in resent),
    )
    log = parts.inference_log
    log_runs = [r for r in log.runs if isinstance(r, LogRun)] if isinstance(log, LogPart) else []
    add(
        "inference log records/s, one process (default compression)",
        ">= 15,000",
        # Runs before zstd became the default have no "default" mark: gzip was.
        [
            r.records_per_s
            for r in log_runs
            if (r.default if r.default is not None else r.compression == "gzip")
        ],
        lambda v: v >= TARGETS["log_records_per_s"],
    )
    sizes = parts.operator.sizes if parts.operator else {}
    big = sizes.get("1000")
    if isinstance(big, OperatorRun) and big.servings is not None:
        seconds = big.seconds_to_all_ready
        add(
            "1,000 servings all Ready, s",
            "<= 60",
            [seconds if seconds is not None else math.inf],
            lambda v: v <= 60,
        )
        add(
            "operator RSS with 1,000 servings (applying; at a restart, peak and after), MiB",
            "<= 250",
            [
                v
                for v in (
                    big.operator_rss_peak_mib,
                    big.operator_rss_restart_peak_mib,
                    big.operator_rss_after_restart_mib,
                )
                if v is not None
            ],
            lambda v: v <= TARGETS["operator_rss_mib"],
        )
    writes = [
        run.restart_objects_written + run.restart_events_added
        for run in (sizes.get(n) for n in ("100", "1000"))
        if isinstance(run, OperatorRun)
        and run.restart_objects_written is not None
        and run.restart_events_added is not None
    ]
    add(
        "writes by an operator restart (objects + Events), 100 / 1,000",
        "0",
        writes,
        lambda v: v == 0,
    )
    return rows


def target_lines(results: Results) -> list[str]:
    lines = [
        "| DESIGN target (ours: auth on, log on) | target | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for what, target, values, verdict in target_rows(results):
        shown = " / ".join("not within the deadline" if v == math.inf else fmt(v) for v in values)
        lines.append(f"| {what} | {target} | {shown or '-'} | {verdict} |")
    return lines
