"""docs/benchmarks.md: how it was measured, then the sections of the parts that ran, each drawn
by its own module."""

from __future__ import annotations

from bench.report.activator import activator_lines
from bench.report.failures import crash_lines, outage_lines
from bench.report.grpc import grpc_lines
from bench.report.inference_log import inference_log_lines
from bench.report.operator import operator_lines
from bench.report.plot import SVG_NAME
from bench.report.profile import profile_lines
from bench.report.request_path import request_path_tables, tracing_lines, versions_lines
from bench.report.results import Results
from bench.report.targets import target_lines


def render_markdown(results: Results) -> str:
    m = results.machine
    commit = results.commit if results.commit is not None else "?"
    seconds = results.seconds if results.seconds is not None else "?"
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
        f"- Date: {results.date}, commit {commit}, {seconds} s in all",
        f"- Machine: {m.cpu}, {m.cores} cores, {m.memory_gib} GiB, Linux {m.kernel}",
        f"- Pinning: {m.pinning}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()),
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
        "upstream keep-alive; the bare aiohttp proxy of `bench/baselines/aiohttp_proxy.py` "
        "(asyncio's loop, then uvloop); KServe's agent (cmd/agent, built from the Go module "
        "proxy through `bench/baselines/kserve_agent`) with its logger off, then on (log-mode "
        "all) into an nginx sink that counts CloudEvents; our sidecar (`modelserving sidecar "
        "--config` with a rendered config) with API-key auth or Kubernetes token auth "
        "(TokenReview + SubjectAccessReview against the local cluster, cache warm after the "
        "warm-up), inference log off or on (mode ALL, into the real Kafka broker, spool on "
        "local disk), on the event loop the project's environment gives it (uvloop when uvloop "
        "is installed) and once on the other loop for comparison (uvloop from a folder of the "
        "benchmark's own).",
        "- Requests/s at saturation: wrk, one thread, 64 connections. Requests/s per core is "
        "requests/s divided by the share of its core the proxy used (its CPU time over the "
        "wall time, whole process tree), so a proxy starved by the shared load core is not "
        "flattered or penalised.",
        "- Latency: vegeta at a constant 200 and 1,000 rps, 5 s each; added latency is the "
        "configuration's percentile minus direct's in the same pass.",
        "- Each configuration runs twice, in two passes over all of them (run 1 / run 2).",
        "",
    ]
    parts = results.parts
    lines += ["## Against the targets", "", *target_lines(results), ""]
    if parts.request_path is not None:
        lines += ["## 1. Request path", "", f"![latency percentiles]({SVG_NAME})", ""]
        lines += [*request_path_tables(parts.request_path), ""]
        versions = versions_lines(parts.request_path)
        if versions:
            lines += [*versions, ""]
        traces = tracing_lines(parts.request_path)
        if traces:
            lines += [*traces, ""]
    if parts.grpc is not None:
        lines += ["## gRPC", "", *grpc_lines(parts.grpc), ""]
    if parts.outage is not None:
        lines += ["## 2. Log destination down for 10 s at 1,000 rps", ""]
        lines += [*outage_lines(parts.outage), ""]
    if parts.crash is not None:
        lines += ["### Our sidecar killed with SIGKILL at 1,000 rps, then restarted", ""]
        lines += [*crash_lines(parts.crash), ""]
    if parts.inference_log is not None:
        lines += ["## 3. Inference log", "", *inference_log_lines(parts.inference_log), ""]
    if parts.operator is not None:
        lines += ["## 4. Operator", "", *operator_lines(parts.operator), ""]
    if parts.profile is not None:
        lines += ["## 5. Profile of the sidecar's hot path", "", *profile_lines(parts.profile), ""]
    if parts.activator is not None:
        lines += ["## 6. Scale to zero (activator)", "", *activator_lines(parts.activator), ""]
    return "\n".join(lines).rstrip() + "\n"
