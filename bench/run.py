"""`make bench`: build what the benchmark needs, run every part, stop what it started, and write
bench/results.json and docs/benchmarks.md.

    python -m bench.run [--parts request-path,grpc,outage,crash,log,operator,profile,activator]
        [--runs 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import tools
from bench.harness.environment import localenv_settings
from bench.harness.procs import LOAD_CORE, PROXY_CORE, BenchError, log
from bench.parts import request_path
from bench.report import page, plot
from bench.report.results import Results, from_json

RESULTS = REPO / "bench" / "results.json"
DOC = REPO / "docs" / "benchmarks.md"
PARTS = ("request-path", "grpc", "outage", "crash", "log", "operator", "profile", "activator")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "pinning": f"proxy under test on core {PROXY_CORE}; load generators, upstream and log "
        f"sink on core {LOAD_CORE} (taskset)",
    }


def localenv_command(command: str) -> None:
    subprocess.run([sys.executable, str(REPO / "localenv" / "localenv.py"), command], check=True)


def ensure_localenv() -> tuple[dict[str, Any] | None, bool]:
    """The local cluster and broker: the running ones, else started here (and so stopped at
    the end). (settings, started_here)"""
    env = localenv_settings()
    if env is not None:
        return env, False
    log("the local environment is not up: starting it (it is stopped again at the end)")
    try:
        localenv_command("up")
    except subprocess.CalledProcessError as exc:
        log(f"the local environment could not start ({exc}); parts that need it are skipped")
        return None, False
    return localenv_settings(), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--runs", type=int, default=2, help="passes over each configuration")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("the benchmark pins the proxy and the load to two different cores")

    started = time.monotonic()
    built = tools.ensure_all()
    env, env_started = ensure_localenv()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": tools.versions(built),
        "commit": _git_commit(),
        "parts": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="modelserving-bench-"))
    bench = request_path.Bench(built, workdir)
    try:
        from bench.parts import sidecar as sidecar_bench

        bench.sidecar = sidecar_bench.SidecarBench.prepare(
            bench, env, tracing="request-path" in parts
        )
        if "request-path" in parts:
            configs = list(request_path.REFERENCES)
            configs += sidecar_bench.configurations(bench)
            results["parts"]["request_path"] = request_path.run_request_path(
                bench, configs, args.runs
            )
        steps = {
            "grpc": ("grpc", lambda: _grpc(bench, args.runs)),
            "outage": ("outage", lambda: _outages(bench)),
            "crash": ("crash", lambda: _crash(bench)),
            "log": ("inference_log", lambda: sidecar_bench.inference_log_throughput(bench)),
            "operator": ("operator", lambda: _operator(env, workdir)),
            "profile": ("profile", lambda: sidecar_bench.profile(bench)),
            "activator": ("activator", lambda: _activator(bench, env, args.runs)),
        }
        for part, (key, step) in steps.items():
            if part in parts:
                try:
                    results["parts"][key] = step()
                except Exception as exc:  # one part failing must not end the others
                    log(f"{part} failed: {exc!r}")
                    results["parts"][key] = {"notes": [f"failed: {str(exc)[-1500:]}"]}
    finally:
        if bench.sidecar is not None:
            bench.sidecar.close()
        if env_started:
            localenv_command("down")
        results["seconds"] = round(time.monotonic() - started)
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        # The JSON is written as the parts returned it; the report reads it typed.
        typed = from_json(Results, results)
        args.doc.write_text(page.render_markdown(typed))
        plot.write_svg(typed, args.doc.parent / plot.SVG_NAME)
        log(f"wrote {args.results} and {args.doc} in {results['seconds']} s")
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            log(f"scratch folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _outages(bench: request_path.Bench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("outage: KServe agent with its log sink down for 10 s at 1,000 rps")
    try:
        out["kserve_agent"] = request_path.kserve_sink_outage(bench, request_path.Outage())
    except BenchError as exc:
        out["kserve_agent"] = {"error": str(exc)[-2000:]}
    if os.environ.get("BENCH_NO_BROKER_OUTAGE"):
        out["sidecar"] = {"error": "skipped (BENCH_NO_BROKER_OUTAGE is set)"}
    elif bench.sidecar is not None and bench.sidecar.runnable:
        log("outage: our sidecar with the Kafka broker down for 10 s at 1,000 rps")
        try:
            out["sidecar"] = bench.sidecar.broker_outage(request_path.Outage())
        except BenchError as exc:
            out["sidecar"] = {"error": str(exc)[-2000:]}
    return out


def _grpc(bench: request_path.Bench, runs: int) -> dict[str, Any]:
    from bench.parts import grpc_path

    return grpc_path.run_grpc(bench, runs)


def _crash(bench: request_path.Bench) -> dict[str, Any]:
    from bench.parts import sidecar_crash

    if bench.sidecar is None or not bench.sidecar.runnable or not bench.sidecar.bootstrap:
        return {"notes": ["skipped: the sidecar or the broker is not there"]}
    return sidecar_crash.run(bench.sidecar)


def _operator(env: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    from bench.parts import operator_scale

    return operator_scale.run(env, workdir)


def _activator(bench: request_path.Bench, env: dict[str, Any] | None, runs: int) -> dict[str, Any]:
    """make bench-activator's figures (bench/comparisons/compare_activator), its defaults with
    `runs` warm rounds."""
    from bench.comparisons import compare_activator

    if env is None:
        return {"notes": ["skipped: the local environment is not up"]}
    return compare_activator.figures_of(bench, env, rounds=runs)


def _git_commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    # A snapshot of the tree (no .git) names its commit in BENCH_COMMIT.
    return proc.stdout.strip() or os.environ.get("BENCH_COMMIT", "unknown")


if __name__ == "__main__":
    sys.exit(main())
