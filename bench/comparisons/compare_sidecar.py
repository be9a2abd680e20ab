"""The sidecar's request path before and after a change: the sidecar beside a bare aiohttp proxy,
and beside itself at another git revision or with other log settings, side by side in one run.

    python -m bench.comparisons.compare_sidecar [--seconds 4] [--rounds 2] [--latency]
        [--baseline REV] [--versions] [--grpc] [--tracing]

One nginx upstream answering a fixed TF Serving predict body
(bench/baselines/nginx/upstream.conf) on core 0 with the load (wrk, and vegeta for latency);
each proxy under test in turn on core 1.
For each configuration: requests/s at saturation, CPU per request and requests/s per core (from
/proc utime+stime over the run), peak RSS, and with --latency the latency added over the direct
path at a fixed rate. Configurations are interleaved over --rounds so that drift hits all
alike, each round in the reverse order of the one before (a later place in a round runs slower
on this machine); medians are reported, and requests/s per core as a ratio to the bare proxy on
uvloop, which a shared, noisy machine moves far less than the figures themselves.

--log-over-sasl-ssl also runs the log-on sidecar producing through the local broker's SASL_SSL
listener (SCRAM-SHA-512 over TLS, the client files localenv made), beside the PLAINTEXT one:
what a secured Kafka costs the request path.

--grpc also runs the working tree's sidecar called over its gRPC port (log off, and log on with
the broker) with ghz, beside a bare grpc.aio proxy (bench/baselines/grpc_aio_proxy) and a
direct gRPC call (with --latency) to the gRPC upstream of bench/baselines/grpc_upstream on core
0: their added latency is over that direct gRPC call. ghz and the upstream are built into the
benchmark's cache when missing (a minute, once).

--tracing also runs the working tree's log-on sidecar exporting its spans to a real Jaeger v2
(localenv's, started on core 0 and stopped at the end) at 0%, 1% and 100% sampling, and reports
the CPU each adds per request over the same sidecar with no collector, round by round.

--tracing-variant LABEL=JSON also runs the working tree's log-on sidecar with that `tracing`
section (e.g. a collector's endpoint and a ratio: the load sends no traceparent, so the ratio is
the share of requests sampled).

--baseline REV also runs the sidecar as it was at git revision REV (from `git archive`), so a
change is compared with what it replaces in the same run (over gRPC too, with --grpc);
--candidate REV measures a revision instead of the working tree. The log-on configurations
produce into the real broker of the local environment (.localenv/env.json); without it they are
skipped. No cluster is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import load, tools
from bench.harness.environment import localenv_settings
from bench.harness.procs import PeakRss, Proc, tree_at
from bench.harness.stats import LatencyResult, rps_per_core
from bench.harness.tools import Tools, vegeta_binary
from bench.parts import grpc_path
from bench.parts.grpc_path import (
    GrpcBench,
    GrpcConfiguration,
    bare_grpc_proxy,
    direct_grpc,
    grpc_upstream,
    sidecar_grpc,
)
from bench.parts.request_path import Bench, Configuration, aiohttp_proxy, direct, upstream
from bench.parts.sidecar import (
    ROUTINGS,
    TRACING_RATIOS,
    SidecarBench,
    over_sasl_ssl,
    tracing_configuration,
    tracing_configurations,
    versions_configuration,
)

LATENCY_RATE = 1000
DIRECT = "direct (nginx upstream)"
DIRECT_GRPC = "direct gRPC (gRPC upstream)"
GRPC_LOG_OFF = "sidecar over gRPC, apiKey, log off"
# Where each configuration's added latency is taken over: the direct call of its protocol.
BASES = {
    name: DIRECT_GRPC
    for name in (DIRECT_GRPC, grpc_path.GRPC_BARE, GRPC_LOG_OFF, grpc_path.GRPC_SIDECAR)
}
REFERENCE = "bare aiohttp proxy, uvloop"  # the ratio column's denominator


@dataclass
class Result:
    rps: float
    requests: int
    cpu_share: float
    cpu_us_per_request: float
    rps_per_core: float
    rss_peak_mib: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_at_rate: float | None = None  # CPU per request at the fixed rate (no batching there)
    round: int = 0  # the round it was measured in (a failed one leaves a gap)


def measure(
    bench: Bench, upstream_proc: Proc, configuration: Configuration, latency: bool, seconds: int
) -> Result:
    """One configuration once: latency at the fixed rate (with --latency), then saturation."""
    with configuration.start(bench) as (proc, target):
        measured = proc or upstream_proc
        p50 = p99 = at_rate = None
        if latency:
            # Before the saturation run: the inference log then has no backlog to catch up on.
            load.vegeta(bench.tools.vegeta, target, bench.workdir, LATENCY_RATE, 1)  # warm-up
            cpu_before = measured.cpu_seconds()
            lat = load.vegeta(bench.tools.vegeta, target, bench.workdir, LATENCY_RATE, 3)
            at_rate = (measured.cpu_seconds() - cpu_before) / lat.requests * 1e6
            p50, p99 = lat.p50_ms, lat.p99_ms
        load.wrk(bench.tools.wrk, target, bench.workdir, seconds=1)  # warm-up
        cpu_before, started = measured.cpu_seconds(), time.monotonic()
        with PeakRss(measured) as rss:
            sat = load.wrk(bench.tools.wrk, target, bench.workdir, seconds=seconds)
        wall = time.monotonic() - started
        cpu = measured.cpu_seconds() - cpu_before
        return Result(
            rps=sat.rps,
            requests=sat.requests,
            cpu_share=cpu / wall,
            cpu_us_per_request=cpu / sat.requests * 1e6,
            rps_per_core=rps_per_core(sat.rps, cpu, wall) or 0.0,
            rss_peak_mib=rss.peak_mib,
            p50_ms=p50,
            p99_ms=p99,
            cpu_us_at_rate=at_rate,
        )


def measure_grpc(
    grpc: GrpcBench, configuration: GrpcConfiguration, latency: bool, seconds: int
) -> Result:
    """`measure` over gRPC: ghz at the fixed rate (with --latency), then saturated."""
    bench = grpc.bench
    with configuration.start(grpc) as started:
        measured = started.proc or grpc.upstream

        def ghz(seconds: float, rate: int | None = None) -> LatencyResult:
            return load.ghz(bench.tools.ghz, started.target, bench.workdir, seconds, rate)

        p50 = p99 = at_rate = None
        if latency:
            ghz(1, LATENCY_RATE)  # warm-up
            cpu_before = measured.cpu_seconds()
            lat = ghz(3, LATENCY_RATE)
            at_rate = (measured.cpu_seconds() - cpu_before) / lat.requests * 1e6
            p50, p99 = lat.p50_ms, lat.p99_ms
        ghz(1)  # warm-up
        cpu_before, began = measured.cpu_seconds(), time.monotonic()
        with PeakRss(measured) as rss:
            sat = ghz(seconds)
        wall = time.monotonic() - began
        cpu = measured.cpu_seconds() - cpu_before
        return Result(
            rps=sat.rate,
            requests=sat.requests,
            cpu_share=cpu / wall,
            cpu_us_per_request=cpu / sat.requests * 1e6,
            rps_per_core=rps_per_core(sat.rate, cpu, wall) or 0.0,
            rss_peak_mib=rss.peak_mib,
            p50_ms=p50,
            p99_ms=p99,
            cpu_us_at_rate=at_rate,
        )


def median(values: list[float]) -> float:
    """One round disturbed by other work on a shared machine does not move the median."""
    return statistics.median(values)


def report(
    results: dict[str, list[Result]],
    reference: str,
    latency: bool,
    bases: dict[str, str] | None = None,
) -> str:
    """The table: medians per configuration, requests/s per core also as a ratio to
    `reference`, and with `latency` the percentiles added over the direct path (over
    `bases[name]` where a configuration has its own, as gRPC's over the direct gRPC call)."""
    ref = median([r.rps_per_core for r in results[reference]]) if results.get(reference) else None
    head = f"{'configuration':52} {'rps':>7} {'core':>5} {'rps/core':>8} {'µs/req':>7} "
    head += f"{'x bare':>6} {'RSS MiB':>7}"
    if latency:
        head += f" {'+p50 ms':>8} {'+p99 ms':>8} {'µs/req@' + str(LATENCY_RATE):>11}"
    lines = [head]
    for name, runs in results.items():
        if not runs:
            continue
        per_core = median([r.rps_per_core for r in runs])
        line = (
            f"{name:52} {median([r.rps for r in runs]):7.0f}"
            f" {median([r.cpu_share for r in runs]):5.2f}"
            f" {per_core:8.0f} {median([r.cpu_us_per_request for r in runs]):7.1f}"
            f" {per_core / ref if ref else 0:6.2f} {max(r.rss_peak_mib for r in runs):7.1f}"
        )
        direct_runs = results.get((bases or {}).get(name, DIRECT))
        if latency and direct_runs and runs[0].p50_ms is not None:
            p50 = median([r.p50_ms or 0 for r in runs]) - median(
                [r.p50_ms or 0 for r in direct_runs]
            )
            p99 = median([r.p99_ms or 0 for r in runs]) - median(
                [r.p99_ms or 0 for r in direct_runs]
            )
            at_rate = median([r.cpu_us_at_rate or 0 for r in runs])
            line += f" {p50:+8.3f} {p99:+8.3f} {at_rate:11.0f}"
        lines.append(line)
    return "\n".join(lines)


def tracing_report(results: dict[str, list[Result]], off: str) -> str:
    """What each sampling ratio adds per request over `off` (the same sidecar with no
    collector): the median of the rounds' differences (each round measures both), CPU at
    saturation and, with --latency, at the fixed rate and the p99."""
    lines = [f"traces, over {off} (median of the rounds' differences):"]
    base = {b.round: b for b in results.get(off, [])}
    for label in TRACING_RATIOS:
        runs = results.get(tracing_configuration(label), [])
        pairs = [(r, base[r.round]) for r in runs if r.round in base]
        if not pairs:
            continue
        cpu = median([r.cpu_us_per_request - b.cpu_us_per_request for r, b in pairs])
        line = f"  {label:>5} sampled: CPU {cpu:+6.1f} µs/req saturated"
        if all(r.cpu_us_at_rate is not None and b.cpu_us_at_rate is not None for r, b in pairs):
            at_rate = median([(r.cpu_us_at_rate or 0) - (b.cpu_us_at_rate or 0) for r, b in pairs])
            p99 = median([(r.p99_ms or 0) - (b.p99_ms or 0) for r, b in pairs])
            line += f", {at_rate:+6.1f} µs/req at {LATENCY_RATE} rps, p99 {p99:+.3f} ms"
        lines.append(line)
    return "\n".join(lines)


def revisions(args: argparse.Namespace, workdir: Path) -> list[tuple[Path | None, str]]:
    """The sidecars measured: (its tree, None for the working tree; its label), --baseline's
    first."""
    versions: list[tuple[Path | None, str]] = [(None, "")]
    if args.candidate:
        versions = [(tree_at(args.candidate, workdir / "candidate"), f" @{args.candidate}")]
    if args.baseline:
        versions.insert(0, (tree_at(args.baseline, workdir / "baseline"), f" @{args.baseline}"))
    return versions


def grpc_configurations(
    side: SidecarBench, args: argparse.Namespace, versions: list[tuple[Path | None, str]]
) -> list[GrpcConfiguration]:
    """With --grpc: the direct gRPC call (with --latency), the bare grpc.aio proxy and the
    sidecar over gRPC, of each revision measured."""
    if not args.grpc:
        return []
    configs = [GrpcConfiguration(DIRECT_GRPC, direct_grpc)] if args.latency else []
    configs.append(GrpcConfiguration(grpc_path.GRPC_BARE, bare_grpc_proxy))
    for code, label in versions:
        if not args.no_log_off:
            configs.append(
                GrpcConfiguration(grpc_name(GRPC_LOG_OFF, label), sidecar_grpc(side, False, code))
            )
        if side.bootstrap:
            configs.append(
                GrpcConfiguration(
                    grpc_name(grpc_path.GRPC_SIDECAR, label), sidecar_grpc(side, True, code)
                )
            )
            for variant in args.log_variant:
                name, _, settings = variant.partition("=")
                configs.append(
                    GrpcConfiguration(
                        f"sidecar{label} [{name}] over gRPC, apiKey, log on",
                        sidecar_grpc(side, True, code, **json.loads(settings)),
                    )
                )
    return configs


def grpc_name(name: str, label: str) -> str:
    """A gRPC sidecar's name with its revision's label: "sidecar @REV over gRPC, ..."."""
    return name.replace("sidecar", f"sidecar{label}", 1)


def configurations(
    side: SidecarBench, args: argparse.Namespace, versions: list[tuple[Path | None, str]]
) -> list[Configuration]:
    """What the flags ask for, in the order they are measured in each round."""
    configs = []
    if args.latency:
        configs.append(Configuration(DIRECT, direct))
    if not args.no_asyncio_bare:
        configs.append(Configuration("bare aiohttp proxy", aiohttp_proxy()))
    configs.append(Configuration(REFERENCE, aiohttp_proxy(uvloop=True)))
    for code, label in versions:
        if not args.no_log_off:
            configs.append(
                side.configuration(f"sidecar{label}, apiKey, log off", "apiKey", False, code=code)
            )
        if side.bootstrap:
            configs.append(
                side.configuration(f"sidecar{label}, apiKey, log on", "apiKey", True, code=code)
            )
            if args.versions and code is None:
                for variant, routing in ROUTINGS.items():
                    configs.append(
                        side.configuration(
                            versions_configuration(variant), "apiKey", True, routing=routing
                        )
                    )
            if args.tracing and code is None and side.jaeger:
                configs += tracing_configurations(side)
            if args.log_over_sasl_ssl:
                configs.append(
                    over_sasl_ssl(side, f"sidecar{label}, apiKey, log on over SASL_SSL", code)
                )
            for variant in args.tracing_variant if code is None else []:
                name, _, settings = variant.partition("=")
                configs.append(
                    side.configuration(
                        f"sidecar{label} [{name}], apiKey, log on",
                        "apiKey",
                        True,
                        code=code,
                        tracing=json.loads(settings),
                    )
                )
            for variant in args.log_variant:
                name, _, settings = variant.partition("=")
                configs.append(
                    side.configuration(
                        f"sidecar{label} [{name}], apiKey, log on",
                        "apiKey",
                        True,
                        code=code,
                        **json.loads(settings),
                    )
                )
    return configs


def progress(message: str) -> None:
    print(f"[measure] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.comparisons.compare_sidecar", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=4, help="wrk seconds per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="passes over all configurations")
    parser.add_argument(
        "--latency", action="store_true", help=f"also p50/p99 at {LATENCY_RATE} rps"
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="git revision whose sidecar is measured alongside"
    )
    parser.add_argument(
        "--candidate",
        metavar="REV",
        help="git revision to measure instead of the working tree (which others may be changing)",
    )
    parser.add_argument("--no-log-off", action="store_true", help="skip the log-off sidecar")
    parser.add_argument(
        "--log-variant",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="also a log-on sidecar (and with --grpc, one over gRPC) with these logging "
        "settings, e.g. "
        "flush20='{\"spoolFlushIntervalSeconds\": 0.02}' (repeatable)",
    )
    parser.add_argument(
        "--tracing-variant",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help="also the log-on sidecar with this tracing section, e.g. "
        'r1=\'{"endpoint": "http://127.0.0.1:4318/v1/traces", "ratio": 0.01}\' (repeatable)',
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also the log-on sidecar exporting spans to a real Jaeger at 0%%, 1%% and 100%% "
        "sampling (localenv's Jaeger, started here)",
    )
    parser.add_argument(
        "--versions",
        action="store_true",
        help="also the sidecar over several model versions: a 90/10 split, and "
        "the split with a 10%% shadow (the working tree's sidecar)",
    )
    parser.add_argument(
        "--log-over-sasl-ssl",
        action="store_true",
        help="also the log-on sidecar through the broker's SASL_SSL listener",
    )
    parser.add_argument(
        "--grpc",
        action="store_true",
        help="also the sidecar called over gRPC (ghz), beside a bare grpc.aio "
        "proxy and, with --latency, a direct gRPC call",
    )
    parser.add_argument(
        "--no-asyncio-bare", action="store_true", help="skip the bare proxy on asyncio's own loop"
    )
    args = parser.parse_args(argv)
    wrk, nginx = shutil.which("wrk"), shutil.which("nginx")
    if not wrk or not nginx:
        raise SystemExit("wrk and nginx are needed: apt-get install -y wrk nginx")
    vegeta = vegeta_binary()
    if args.latency and not vegeta.exists():
        raise SystemExit(f"--latency needs vegeta at {vegeta} (make bench builds it)")
    # Only nginx, wrk and vegeta of bench's tools are used here, and with --grpc ghz and the
    # gRPC upstream (built into the cache when missing): no build of the others.
    ghz, grpc_server = (tools.ensure_ghz(), tools.ensure_grpc_upstream()) if args.grpc else ("", "")
    built = Tools(
        nginx=nginx,
        wrk=wrk,
        vegeta=str(vegeta),
        kserve_agent="",
        py_spy=None,
        pylib=None,
        ghz=ghz,
        grpc_upstream=grpc_server,
    )
    with tempfile.TemporaryDirectory(prefix="compare-sidecar-") as tmp:
        bench = Bench(built, Path(tmp))
        side = SidecarBench.prepare(
            bench, localenv_settings(), kubernetes=False, tracing=args.tracing
        )
        if not side.runnable:
            raise SystemExit(side.why_not)
        for note in side.notes:
            progress(note)
        try:
            versions = revisions(args, Path(tmp))
            configs: list[Configuration | GrpcConfiguration] = [
                *configurations(side, args, versions),
                *grpc_configurations(side, args, versions),
            ]
            results: dict[str, list[Result]] = {c.name: [] for c in configs}
            with contextlib.ExitStack() as running:
                upstream_proc = running.enter_context(upstream(bench))
                grpc = running.enter_context(grpc_upstream(bench)) if args.grpc else None
                for round_ in range(args.rounds):
                    for config in configs if round_ % 2 == 0 else configs[::-1]:
                        progress(f"round {round_ + 1}: {config.name}")
                        try:
                            if isinstance(config, GrpcConfiguration):
                                assert grpc is not None  # started with --grpc, its only source
                                result = measure_grpc(grpc, config, args.latency, args.seconds)
                            else:
                                result = measure(
                                    bench, upstream_proc, config, args.latency, args.seconds
                                )
                            result.round = round_
                            results[config.name].append(result)
                        except Exception as exc:  # one failing (broker down) spares the rest
                            progress(f"{config.name} failed: {exc}")
        finally:
            side.close()
    loadavg = Path("/proc/loadavg").read_text().split()[0]
    pressure = Path("/proc/pressure/cpu")
    waiting = pressure.read_text().split()[2] if pressure.exists() else "?"
    print(
        f"wrk {args.seconds} s x {args.rounds} round(s) (medians), 64 connections; "
        f"load avg {loadavg}, CPU pressure {waiting}"
    )
    # Every gRPC configuration's latency is added over the direct gRPC call, revisions' too.
    bases = {c.name: DIRECT_GRPC for c in configs if isinstance(c, GrpcConfiguration)}
    print(report(results, REFERENCE, args.latency, {**BASES, **bases}))
    if args.tracing:
        print(tracing_report(results, "sidecar, apiKey, log on"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
