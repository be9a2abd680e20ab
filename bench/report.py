"""The benchmark's readable output: docs/benchmarks.md (tables with both runs of each figure,
beside the references and targets of DESIGN.md) and a hand-written SVG of latency percentiles
per configuration (no plotting library needed)."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from bench.grpc_path import FLOORS as GRPC_FLOORS
from bench.grpc_path import GRPC_SIDECAR, REST_SIDECAR
from bench.grpc_path import PROTOCOLS as GRPC_PROTOCOLS
from bench.sidecar import ONE_VERSION, ROUTINGS, versions_configuration
from bench.stats import mean

# DESIGN.md's targets for our sidecar (auth on, log on) and the references measured there.
TARGETS = {
    "rps_per_core": 7000,
    "added_p50_ms_at_1000": 0.25,
    "added_p99_ms_at_1000": 1.0,
    "rss_mib": 150,
    "records_lost": 0,
    "log_records_per_s": 15000,
    "log_cpu_us_per_request": 20,
    "ours_over_kserve_logger": 1.0,
    "operator_ready_1000_s": 60,
    "operator_restart_writes": 0,
    "operator_rss_mib": 250,
}
REFERENCES = {
    "nginx reverse proxy": ">= 80,000 rps/core; +0.10 / +0.17 ms",
    "KServe agent, logger off": "21,100 rps/core; +0.12 / +0.55 ms; 90 MB",
    "KServe agent, logger on": "14,000 rps/core; +0.14 / +5.07 ms; 2.35 GB peak",
    "bare aiohttp proxy": "8,600 rps/core; +0.26 / +0.77 ms",
}
SVG_NAME = "benchmarks-latency.svg"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _both(runs: list[dict[str, Any]], get: Any, digits: int = 2) -> str:
    """Both runs of one figure, `run 1 / run 2`."""
    values = []
    for run in runs:
        try:
            values.append(_fmt(get(run), digits))
        except (KeyError, TypeError):
            values.append("failed" if "error" in run else "-")
    return " / ".join(values) if values else "-"


OURS = ONE_VERSION
OURS_LOG_OFF = "sidecar, apiKey, log off"
OURS_DURABLE = "sidecar, apiKey, log on, spooled"
KSERVE_LOGGER = "KServe agent, logger on"


def _runs(parts: dict[str, Any], name: str) -> list[dict[str, Any] | None]:
    """A configuration's passes, a failed one as None (so pass i of two configurations pair)."""
    runs = parts.get("request_path", {}).get("results", {}).get(name, [])
    return [r if r.get("rps_per_core") else None for r in runs]


def _per_pass(parts: dict[str, Any], a: str, b: str, combine: Any) -> list[float]:
    """combine(pass of a, pass of b) for each pass where both were measured."""
    return [
        combine(x, y)
        for x, y in zip(_runs(parts, a), _runs(parts, b), strict=False)
        if x is not None and y is not None
    ]


def log_cpu_us_per_request(on: dict[str, Any], off: dict[str, Any]) -> float:
    """The log's own CPU per request: CPU µs per request with it on minus with it off."""
    return 1e6 / on["rps_per_core"] - 1e6 / off["rps_per_core"]


def _verdict(values: list[float], ok: Any) -> str:
    if not values:
        return "not measured"
    met = [ok(v) for v in values]
    return "met" if all(met) else "**short**" if not any(met) else "mixed"


def target_rows(results: dict[str, Any]) -> list[tuple[str, str, list[float], str]]:
    """(what, target, measured values, verdict) for DESIGN's targets of our sidecar."""
    parts = results["parts"]
    rows: list[tuple[str, str, list[float], str]] = []

    def add(what: str, target: str, values: list[float], ok: Any) -> None:
        rows.append((what, target, values, _verdict(values, ok)))

    ours = [
        r for r in parts.get("request_path", {}).get("results", {}).get(OURS, []) if "latency" in r
    ]
    add(
        "requests/s per core (apiKey, log on)",
        ">= 7,000",
        [r["rps_per_core"] for r in ours],
        lambda v: v >= TARGETS["rps_per_core"],
    )
    add(
        "added p50 at 1,000 rps, ms",
        "<= +0.25",
        [r["added_ms"]["1000"]["p50"] for r in ours if "added_ms" in r],
        lambda v: v <= TARGETS["added_p50_ms_at_1000"],
    )
    add(
        "added p99 at 1,000 rps, ms",
        "<= +1.0",
        [r["added_ms"]["1000"]["p99"] for r in ours if "added_ms" in r],
        lambda v: v <= TARGETS["added_p99_ms_at_1000"],
    )
    add(
        "the log's own CPU per request (log on minus log off), µs",
        "<= 20",
        _per_pass(parts, OURS, OURS_LOG_OFF, log_cpu_us_per_request),
        lambda v: v <= TARGETS["log_cpu_us_per_request"],
    )
    add(
        "requests/s per core, log on, over KServe's agent with its logger",
        ">= 1.0",
        _per_pass(parts, OURS, KSERVE_LOGGER, lambda o, k: o["rps_per_core"] / k["rps_per_core"]),
        lambda v: v >= TARGETS["ours_over_kserve_logger"],
    )
    durable = [r for r in _runs(parts, OURS_DURABLE) if r is not None and "added_ms" in r]
    for pct, key in (("p50", "added_p50_ms_at_1000"), ("p99", "added_p99_ms_at_1000")):
        add(
            f"added {pct} at 1,000 rps in the durable mode (spooled), ms",
            f"<= +{TARGETS[key]}",
            [r["added_ms"]["1000"][pct] for r in durable],
            lambda v, key=key: v <= TARGETS[key],
        )
    add(
        "peak RSS at saturation, MiB",
        "<= 150",
        [r["rss_peak_mib"] for r in ours],
        lambda v: v <= TARGETS["rss_mib"],
    )
    outage = parts.get("outage", {}).get("sidecar", {})
    add(
        "records lost, broker down 10 s at 1,000 rps",
        "0",
        [outage["records_lost"]] if "records_lost" in outage else [],
        lambda v: v == 0,
    )
    crash = parts.get("crash", {})
    add(
        "answered requests whose record was lost, sidecar SIGKILL at 1,000 rps, spooled",
        "0",
        [crash["spooled"]["records_lost"]] if "records_lost" in crash.get("spooled", {}) else [],
        lambda v: v == 0,
    )
    resent = [crash[d] for d in ("buffered", "spooled") if "records_resent" in crash.get(d, {})]
    add(
        "records sent twice after that SIGKILL (buffered; spooled)",
        "<= in flight",
        [c["records_resent"] for c in resent],
        lambda v: all(c["records_resent"] <= c["max_in_flight_records"] for c in resent),
    )
    log_runs = [r for r in parts.get("inference_log", {}).get("runs", []) if "records_per_s" in r]
    add(
        "inference log records/s, one process (default compression)",
        ">= 15,000",
        # Runs before zstd became the default have no "default" mark: gzip was.
        [r["records_per_s"] for r in log_runs if r.get("default", r.get("compression") == "gzip")],
        lambda v: v >= TARGETS["log_records_per_s"],
    )
    op = parts.get("operator", {})
    big = op.get("1000", {})
    if "servings" in big:
        seconds = big.get("seconds_to_all_ready")
        add(
            "1,000 servings all Ready, s",
            "<= 60",
            [seconds if seconds is not None else float("inf")],
            lambda v: v <= 60,
        )
        add(
            "operator RSS with 1,000 servings (applying; at a restart, peak and after), MiB",
            "<= 250",
            [
                big[k]
                for k in (
                    "operator_rss_peak_mib",
                    "operator_rss_restart_peak_mib",
                    "operator_rss_after_restart_mib",
                )
                if k in big
            ],
            lambda v: v <= TARGETS["operator_rss_mib"],
        )
    writes = [
        op[n]["restart_objects_written"] + op[n]["restart_events_added"]
        for n in ("100", "1000")
        if "restart_objects_written" in op.get(n, {})
    ]
    add(
        "writes by an operator restart (objects + Events), 100 / 1,000",
        "0",
        writes,
        lambda v: v == 0,
    )
    return rows


def target_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "| DESIGN target (ours: auth on, log on) | target | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for what, target, values, verdict in target_rows(results):
        shown = " / ".join(
            "not within the deadline" if v == float("inf") else _fmt(v) for v in values
        )
        lines.append(f"| {what} | {target} | {shown or '-'} | {verdict} |")
    return lines


def request_path_tables(part: dict[str, Any]) -> list[str]:
    results = part["results"]
    lines = [
        "### Saturation (wrk, 1 thread, 64 connections, 5 s after a 1 s warm-up)",
        "",
        "| configuration | requests/s | proxy's share of its core | requests/s per core "
        "| peak RSS (MiB) | DESIGN reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in part["configurations"]:
        runs = results[name]
        lines.append(
            f"| {name} | {_both(runs, lambda r: round(r['saturation']['rps']))} "
            f"| {_both(runs, lambda r: r['cpu_share'])} "
            f"| {_both(runs, lambda r: r['rps_per_core'])} "
            f"| {_both(runs, lambda r: r['rss_peak_mib'], 1)} "
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
        for name in part["configurations"]:
            runs = results[name]
            cells = [
                _both(runs, lambda r, p=p, rate=rate: r["latency"][rate][f"{p}_ms"], 3)
                for p in ("p50", "p90", "p99")
            ]
            cells += [
                _both(runs, lambda r, p=p, rate=rate: r["added_ms"][rate][p], 3)
                for p in ("p50", "p90", "p99")
            ]
            cells.append(_both(runs, lambda r, rate=rate: r["latency"][rate]["success"], 3))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _cpu_us_per_request(run: dict[str, Any]) -> float:
    """CPU µs per request at saturation: the inverse of requests/s per core."""
    return 1e6 / run["rps_per_core"]


def _over(runs: list[dict[str, Any]], base: list[dict[str, Any]], get: Any, digits: int) -> str:
    """get(run) - get(the one-version run of the same pass), for each pass, `+x / +y`."""
    values = []
    for run, one in zip(runs, base, strict=False):
        try:
            values.append(f"{get(run) - get(one):+,.{digits}f}")
        except (KeyError, TypeError, ZeroDivisionError):
            values.append("failed" if "error" in run or "error" in one else "-")
    return " / ".join(values) if values else "-"


def versions_lines(part: dict[str, Any]) -> list[str]:
    """What several model versions cost per request beside one version, pass by pass: CPU at
    saturation and at 1,000 rps, and the added p99 at 1,000 rps. Empty when the variants were
    not measured (no broker: the log-on sidecar did not run)."""
    results = part["results"]
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

    def at_rate(run: dict[str, Any]) -> float:
        return float(run["cpu_us_at_rate"]["1000"])

    def p99(run: dict[str, Any]) -> float:
        return float(run["added_ms"]["1000"]["p99"])

    for name in [ONE_VERSION, *names]:
        runs = results[name]
        same = name == ONE_VERSION
        lines.append(
            f"| {name} | {_both(runs, _cpu_us_per_request, 1)} "
            f"| {'' if same else _over(runs, base, _cpu_us_per_request, 1)} "
            f"| {_both(runs, at_rate, 1)} | {'' if same else _over(runs, base, at_rate, 1)} "
            f"| {_both(runs, p99, 3)} | {'' if same else _over(runs, base, p99, 3)} |"
        )
    return lines


def grpc_lines(part: dict[str, Any]) -> list[str]:
    """The gRPC path beside REST, both measured in the same passes: requests per core at
    saturation, latency at 1,000 rps, and what each sidecar adds over its own protocol's direct
    call at 200 and 1,000 rps; for the gRPC sidecar, its records counted on the topic."""
    if "results" not in part:
        return generic_lines(part)
    results = part["results"]
    lines = [
        "TF Serving's `PredictionService/Predict` through our sidecar's gRPC port (API-key "
        "auth, inference log on into the real broker: the sidecar of REST's \"sidecar, apiKey, "
        "log on\") and straight to a gRPC upstream that answers at once, beside REST's direct "
        "call and the same sidecar over REST, and a bare grpc.aio proxy (`bench/grpc_aio_proxy`: "
        "bytes forwarded, no auth, no log; the floor of the sidecar's gRPC stack, as the bare "
        "aiohttp proxy is of REST's), all in each pass. The gRPC upstream is "
        "`bench/grpc_upstream` (grpc-go, requests read as bytes, a fixed PredictResponse of "
        "the REST upstream's predictions) on the load core; the request is REST's request as a "
        "PredictRequest (the same tensor). gRPC load: ghz, 64 calls at once over one "
        "connection, with our `.proto` files; saturated 5 s after a 1 s warm-up, then 5 s at "
        "200 and at 1,000 calls/s. Added latency is over the direct call of the same protocol "
        "in the same pass.",
        "",
        "| configuration | protocol | requests/s per core (saturated) | rate reached at 1,000 "
        "rps | p50 / p99 at 1,000 rps, ms | added p50 / p99 at 200 rps, ms | added p50 / p99 "
        "at 1,000 rps, ms | records on the topic / calls answered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pair(get: Any) -> Any:
        return lambda r: f"{get(r, 'p50'):.3f} / {get(r, 'p99'):.3f}"

    def measured(r: dict[str, Any], p: str) -> float:
        return float(r["latency"]["1000"][f"{p}_ms"])

    def added(rate: str) -> Any:
        return pair(lambda r, p: float(r["added_ms"][rate][p]))

    def records(r: dict[str, Any]) -> str:
        return f"{r['records']['on_topic']:,} / {r['records']['calls_answered']:,}"

    rows: list[tuple[str, str, str | None]] = []  # (configuration, protocol, its direct call)
    for protocol, base, sidecar in GRPC_PROTOCOLS:
        rows.append((base, protocol, None))
        rows += [(floor, protocol, base) for floor, of in GRPC_FLOORS.items() if of == base]
        rows.append((sidecar, protocol, base))
    for name, protocol, base in rows:
        runs = results.get(name)
        if runs is None:
            continue
        cells = [
            _both(runs, lambda r: r["rps_per_core"], 0),
            _both(runs, lambda r: round(r["latency"]["1000"]["rate"]), 0),
            _cells(runs, pair(measured)),
            _cells(runs, added("200")) if base else "",
            _cells(runs, added("1000")) if base else "",
            _cells(runs, records) if name == GRPC_SIDECAR else "",
        ]
        lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    ratios = _per_pass_in(
        results, GRPC_SIDECAR, REST_SIDECAR, lambda g, r: g["rps_per_core"] / r["rps_per_core"]
    )
    if ratios:
        shown = " / ".join(f"{v:.2f}" for v in ratios)
        lines += [
            "",
            f"Requests per core, the sidecar over gRPC over the sidecar over REST: "
            f"{shown} (pass by pass).",
        ]
    return lines


def _cells(runs: list[dict[str, Any]], show: Any) -> str:
    """show(run) of each run, `run 1 ; run 2` (a cell that already holds a pair)."""
    values = []
    for run in runs:
        try:
            values.append(show(run))
        except (KeyError, TypeError):
            values.append("failed" if "error" in run else "-")
    return " ; ".join(values) if values else "-"


def _per_pass_in(results: dict[str, Any], a: str, b: str, combine: Any) -> list[float]:
    """combine(pass of a, pass of b) for each pass where both were measured."""
    return [
        combine(x, y)
        for x, y in zip(results.get(a, []), results.get(b, []), strict=False)
        if x.get("rps_per_core") and y.get("rps_per_core")
    ]


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks: our sidecar beside nginx, KServe's agent and a bare aiohttp proxy",
        "",
        "Written by `make bench` (`python -m bench.run`); the raw figures are in "
        "`bench/results.json`. Every figure is given for both runs, `run 1 / run 2`.",
        "",
        "To compare a change before and after, use the comparisons instead (the README's "
        "Benchmarks section): `make bench-sidecar` and `make bench-log` run both sides in one "
        "run and report ratios, which this shared machine's noise moves far less than figures "
        "from runs at different times; `make bench-operator` shows the operator at chosen sizes "
        "in more detail.",
        "",
        f"- Date: {results['date']}, commit {results.get('commit', '?')}, "
        f"{results.get('seconds', '?')} s in all",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"- Pinning: {m['pinning']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "- The machine is shared with other work (a Kafka broker and a Kubernetes control "
        "plane run beside the benchmark, and other builds and tests at times): the 1-minute "
        "load average at each measurement is in `bench/results.json`; tail latencies (p99) "
        "move most when something else runs.",
        "",
        "How it is measured:",
        "",
        "- Upstream: Debian's nginx (one worker) answering every POST with the fixed TF Serving "
        'body `{"predictions": [[2.5], [3.0]]}` (and the model status GET, so the sidecar '
        "finds the model AVAILABLE). Request: `POST /v1/models/bench:predict` with "
        '`{"instances": [[1.0], [2.0]]}`.',
        "- In front of it, one at a time: nothing (direct); nginx as a reverse proxy with "
        "upstream keep-alive; the bare aiohttp proxy of `bench/aiohttp_proxy.py` (asyncio's "
        "loop, then uvloop); KServe's agent (cmd/agent, built from the Go module proxy through "
        "`bench/kserve_agent`) with its logger off, then on (log-mode all) into an nginx sink "
        "that counts CloudEvents; our sidecar (`modelserving sidecar --config` with a rendered "
        "config) with API-key auth or Kubernetes token auth (TokenReview + SubjectAccessReview "
        "against the local cluster, cache warm after the warm-up), inference log off or on "
        "(mode ALL, into the real Kafka broker, spool on local disk), on the event loop the "
        "project's environment gives it (uvloop when uvloop is installed) and once on the "
        "other loop for comparison (uvloop from a folder of the benchmark's own).",
        "- Requests/s at saturation: wrk, one thread, 64 connections. Requests/s per core is "
        "requests/s divided by the share of its core the proxy used (its CPU time over the "
        "wall time, whole process tree), so a proxy starved by the shared load core is not "
        "flattered or penalised.",
        "- Latency: vegeta at a constant 200 and 1,000 rps, 5 s each; added latency is the "
        "configuration's percentile minus direct's in the same pass.",
        "- Each configuration runs twice, in two passes over all of them (run 1 / run 2).",
        "",
    ]
    parts = results["parts"]
    lines += ["## Against the targets", "", *target_lines(results), ""]
    if "request_path" in parts:
        lines += ["## 1. Request path", "", f"![latency percentiles]({SVG_NAME})", ""]
        lines += [*request_path_tables(parts["request_path"]), ""]
        versions = versions_lines(parts["request_path"])
        if versions:
            lines += [*versions, ""]
    if "grpc" in parts:
        lines += ["## gRPC", "", *grpc_lines(parts["grpc"]), ""]
    if "outage" in parts:
        lines += ["## 2. Log destination down for 10 s at 1,000 rps", ""]
        lines += [*outage_lines(parts["outage"]), ""]
    if "crash" in parts:
        lines += ["### Our sidecar killed with SIGKILL at 1,000 rps, then restarted", ""]
        lines += [*crash_lines(parts["crash"]), ""]
    for key, title, render in (
        ("inference_log", "## 3. Inference log", inference_log_lines),
        ("operator", "## 4. Operator", operator_lines),
        ("profile", "## 5. Profile of the sidecar's hot path", profile_lines),
    ):
        if key in parts:
            lines += [title, "", *render(parts[key]), ""]
    return "\n".join(lines).rstrip() + "\n"


def outage_lines(part: dict[str, Any]) -> list[str]:
    lines = []
    agent = part.get("kserve_agent", {})
    if "error" in agent:
        lines.append(f"- KServe agent: failed: `{agent['error'][-300:]}`")
    elif agent:
        lines.append(
            f"- KServe agent, logger on, HTTP sink down {agent['sink_down_seconds']} s: "
            f"{agent['requests_answered']:,} requests answered, "
            f"{agent['events_delivered']:,} of {agent['events_expected']:,} CloudEvents "
            f"reached the sink, **{agent['events_lost']:,} lost** (reference: about 20,000); "
            f"peak RSS {agent['rss_peak_mib']} MiB; p99 {agent['latency']['p99_ms']:.2f} ms."
        )
    ours = part.get("sidecar", {})
    if "error" in ours:
        lines.append(f"- Our sidecar: failed: `{ours['error'][-300:]}`")
    elif ours:
        lines.append(
            f"- Our sidecar, log on, Kafka broker down {ours['broker_down_seconds']} s: "
            f"{ours['requests_answered']:,} requests answered, "
            f"{ours['records_delivered']:,} records on the topic, "
            f"**{ours['records_lost']:,} lost** (target: 0); peak RSS "
            f"{ours['rss_peak_mib']} MiB; p99 {ours['latency']['p99_ms']:.2f} ms."
        )
    return lines


def crash_lines(part: dict[str, Any]) -> list[str]:
    if not any(d in part for d in ("buffered", "spooled")):
        return generic_lines(part)
    lines = [
        "The sidecar (API-key auth, log on into the real broker) answers a steady 1,000 rps, is "
        "killed with SIGKILL 3 s in, and is started again on the same spool; then the topic is "
        "read whole. `spooled` answers only once the record is in the spool file; `buffered` "
        "(the default) answers at once and writes within the flush interval (5 ms).",
        "",
        "| durability | rate reached | answered 200 before the kill | records lost "
        "| lost ones answered within, ms of the kill | records sent twice | bound (in flight) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for durability in ("buffered", "spooled"):
        run = part.get(durability)
        if run is None:
            continue
        if "error" in run:
            lines.append(f"| {durability} | failed: `{run['error'][-200:]}` |")
            continue
        lines.append(
            f"| {durability} | {run['rate_reached']:,} | {run['answered_before_kill']:,} "
            f"| **{run['records_lost']:,}** | {run['lost_answered_within_ms_of_kill']} "
            f"| **{run['records_resent']:,}** | {run['max_in_flight_records']:,} |"
        )
    return lines


def generic_lines(part: dict[str, Any]) -> list[str]:
    """A part's figures as a bullet list (its notes first)."""
    lines = [f"- {note}" for note in part.get("notes", [])]
    for key, value in part.items():
        if key == "notes":
            continue
        if isinstance(value, dict | list):
            lines.append(f"- {key}: `{value}`")
        else:
            lines.append(f"- {key}: {_fmt(value)}")
    return lines


def inference_log_lines(part: dict[str, Any]) -> list[str]:
    if "runs" not in part:
        return generic_lines(part)
    lines = [f"- {note}" for note in part.get("notes", [])]
    lines += [
        "",
        "| producer compression | records | value bytes | s to all acked | records/s "
        "| on topic (distinct) | encode µs/record | submit µs/record |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in part["runs"]:
        if "error" in run:
            lines.append(f"| {run.get('compression', '?')} | failed: {run['error'][-200:]} |")
            continue
        lines.append(
            f"| {run['compression']} | {run['records']:,} | {run['record_value_bytes']} "
            f"| {run['seconds_to_all_acked']} | **{run['records_per_s']:,}** "
            f"| {run['records_on_topic']:,} ({run['distinct_records_on_topic']:,}) "
            f"| {run['encode_us_per_record']} | {run['submit_us_per_record']} |"
        )
    return lines


def operator_lines(part: dict[str, Any]) -> list[str]:
    lines = [f"- {note}" for note in part.get("notes", [])]
    sizes = [k for k in part if k.isdigit()]
    if not sizes:
        return lines
    lines += [
        "",
        "| servings | all Ready after (s) | the cluster alone, same objects: all available "
        "after (s) | ratio | Ready at the end | Deployments available "
        "| operator RSS peak / settled / at a restart, peak / after (MiB) "
        "| restart: all reconciled after (s) | restart: objects written "
        "| restart: Events added |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in sizes:
        r, floor = part[n], part.get(f"floor_{n}", {})
        if "error" in r:
            lines.append(f"| {n} | failed: {r['error'][-200:]} |")
            continue
        lines.append(
            f"| {int(n):,} | {_ready_after(r)} | {_floor_after(floor)} "
            f"| {_fmt(floor_ratio(r, floor))} | {r.get('ready')} "
            f"| {r.get('deployments_available', '-')} "
            f"| {r.get('operator_rss_peak_mib')} / {r.get('operator_rss_settled_mib')} "
            f"/ {r.get('operator_rss_restart_peak_mib', '-')} "
            f"/ {r.get('operator_rss_after_restart_mib')} "
            f"| {_restart_after(r)} "
            f"| {r.get('restart_objects_written')} | {r.get('restart_events_added')} |"
        )
    appliers = {part[k].get("applier") for k in part if k.startswith("floor_")} - {None}
    appliers -= {part[k].get("applier") for k in part if k.startswith("floor_writes_")}
    applier = f" ({', '.join(sorted(appliers))})" if appliers else ""
    lines += _least_writes_lines(part, sizes)
    lines += _control_plane_lines(part, sizes)
    lines += [
        "",
        "The cluster alone: the same children (every object the operator renders for a "
        "serving, rendered by its code: Deployment, Service, ConfigMaps, NetworkPolicy, the "
        f"sidecar's ServiceAccount and RoleBinding) created by the benchmark's applier{applier}, "
        "as the servings of the operator's side are, with no operator running, timed until every "
        "Deployment has its Pod available. No operator can be faster than that on the same "
        "machine; the ratio is the operator's time over it, measured in the same run.",
    ]
    return lines


def _least_writes_lines(part: dict[str, Any], sizes: list[str]) -> list[str]:
    """The second floor: the cluster with the writes any operator makes (floor_writes_N)."""
    measured = [n for n in sizes if f"floor_writes_{n}" in part and "error" not in part[n]]
    if not measured:
        return []
    lines = [
        "",
        "| servings | all Ready after (s) | the cluster with the servings and the writes any "
        "operator makes: all available after (s) | writes there, per serving | ratio "
        "| the operator's API writes per serving (+ its Events) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in measured:
        r, floor = part[n], part[f"floor_writes_{n}"]
        per_serving = floor["writes"] / int(n) if "writes" in floor else None
        ours = (r.get("operator") or {}).get("api_writes_per_serving")
        lines.append(
            f"| {int(n):,} | {_ready_after(r)} | {_floor_after(floor)} | {_fmt(per_serving)} "
            f"| {_fmt(floor_ratio(r, floor))} | {_fmt(ours)} + {r.get('events_per_serving', '-')} "
            "|"
        )
    applier = part[f"floor_writes_{measured[0]}"].get("applier", "")
    return [
        *lines,
        "",
        "The writes any operator makes, with no operator running: each serving created (the "
        "user's request, as on the operator's side), its children as the operator renders them "
        "(owned by it: the garbage collector's work counts), and one status write, by the "
        f"benchmark's applier ({applier}); timed until every Deployment has its Pod available. "
        "The ratio is what the operator costs beyond what it must write, measured in the same "
        "run. Events counted are every Event in the namespace per serving (the cluster's own "
        "included).",
    ]


def _control_plane_lines(part: dict[str, Any], sizes: list[str]) -> list[str]:
    """The control plane's CPU seconds in each run of a size: what it cost the cluster."""

    def total(run: dict[str, Any]) -> float | None:
        value = (run.get("control_plane_cpu_seconds") or {}).get("total")
        return float(value) if value is not None else None

    measured = [n for n in sizes if total(part[n]) is not None]
    if not measured:
        return []  # a run from before the figure
    lines = [
        "",
        "| servings | control plane CPU (s): with the operator | the cluster alone | ratio "
        "| the cluster with the writes any operator makes | ratio |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in measured:
        ours = total(part[n])
        alone = total(part.get(f"floor_{n}", {}))
        writes = total(part.get(f"floor_writes_{n}", {}))
        lines.append(
            f"| {int(n):,} | {_fmt(ours, 1)} | {_fmt(alone, 1)} | {_fmt(_ratio(ours, alone))} "
            f"| {_fmt(writes, 1)} | {_fmt(_ratio(ours, writes))} |"
        )
    return [
        *lines,
        "",
        "The CPU seconds the cluster's own processes (kube-apiserver, etcd, the controller "
        "manager, the scheduler, KWOK) used in each run, from the first request until all were "
        "Ready or available; the operator's own CPU is not in it. On this machine the control "
        "plane is what every side waits on, so these ratios say what the operator costs the "
        "cluster, with far less of the machine's noise than the times.",
    ]


def _ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours and floor else None


def _restart_after(r: dict[str, Any]) -> str:
    if "restart_seconds_to_reconcile_all" not in r:
        return "-"  # a run from before the figure
    seconds = r["restart_seconds_to_reconcile_all"]
    return f"{seconds}" if seconds is not None else "not all"


def floor_ratio(operator: dict[str, Any], floor: dict[str, Any]) -> float | None:
    """The operator's time to all Ready over the cluster's own time for the same objects."""
    return _ratio(operator.get("seconds_to_all_ready"), floor.get("seconds_to_all_available"))


def _floor_after(floor: dict[str, Any]) -> str:
    if "error" in floor:
        return f"failed: {floor['error'][-120:]}"
    return _fmt(floor.get("seconds_to_all_available"), 1)


def _ready_after(r: dict[str, Any]) -> str:
    if r.get("seconds_to_all_ready") is not None:
        return _fmt(r["seconds_to_all_ready"], 1)
    return f"not all within {r.get('ready_timeout_seconds', 0):.0f}"


def profile_lines(part: dict[str, Any]) -> list[str]:
    lines = [f"- {note}" for note in part.get("notes", [])]
    if "top_own" not in part:
        return lines
    lines.append(f"- samples: {part['samples']:,}")
    if part.get("own_time_by_package"):
        lines.append(
            "- own time by package: "
            + ", ".join(f"{name} {share}%" for name, share in part["own_time_by_package"])
        )
    lines += ["", "| function (own time) | % of samples |", "| --- | --- |"]
    lines += [f"| `{frame}` | {share} |" for frame, share in part["top_own"]]
    lines += ["", "| function (inclusive time) | % of samples |", "| --- | --- |"]
    lines += [f"| `{frame}` | {share} |" for frame, share in part["top_inclusive"]]
    return lines


# ------------------------------------------------------------------ the plot


def latency_series(part: dict[str, Any], rate: str = "1000") -> list[tuple[str, list[float]]]:
    """(configuration, [p50, p90, p99] averaged over the runs that succeeded), in ms."""
    series = []
    for name in part["configurations"]:
        ok = [r for r in part["results"][name] if "latency" in r]
        if ok:
            series.append(
                (
                    name,
                    [
                        mean([r["latency"][rate][f"{p}_ms"] for r in ok])
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


def write_svg(results: dict[str, Any], path: Path) -> None:
    part = results["parts"].get("request_path")
    if not part:
        return
    series = latency_series(part)
    if series:
        title = "Latency at 1,000 rps (vegeta), mean of the runs, log scale"
        path.write_text(render_svg(series, title))
