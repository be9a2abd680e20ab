#!/usr/bin/env python3
"""Measure the sidecar's request path against a bare aiohttp proxy, side by side in one run.

One nginx upstream answering a fixed TF Serving predict body (bench/nginx/upstream.conf) on
core 0 with the load (wrk, and vegeta for latency); each proxy under test in turn on core 1.
For each configuration: requests/s at saturation, CPU per request and requests/s per core (from
/proc utime+stime over the run), peak RSS, and with --latency the latency added over the direct
path at a fixed rate. Configurations are interleaved over --rounds so that drift hits all
alike; medians are reported.

    python tools/measure_sidecar.py [--seconds 4] [--rounds 2] [--latency] [--baseline REV]

--baseline REV also runs the sidecar as it was at git revision REV (from `git archive`), so a
change is compared with what it replaces in the same run; --candidate REV measures a revision
instead of the working tree. The log-on configurations produce into
the real broker of the local environment (.localenv/env.json); without it they are skipped.
Reuses bench/'s pieces (processes, nginx template, wrk/vegeta runners); standard library else.
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
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import load  # noqa: E402
from bench.procs import LOAD_CORE, PROXY_CORE, PeakRss, Proc, free_port, tree_at  # noqa: E402
from bench.request_path import Bench  # noqa: E402
from bench.sidecar import API_KEY, create_topic  # noqa: E402
from bench.tools import VEGETA_VERSION  # noqa: E402

VEGETA = Path.home() / ".cache" / "modelserving" / f"vegeta-{VEGETA_VERSION}" / "bin" / "vegeta"
LATENCY_RATE = 1000


@dataclass(frozen=True)
class Configuration:
    name: str
    start: Callable[[], contextlib.AbstractContextManager[tuple[Proc | None, load.Target]]]


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


class Measurement:
    def __init__(self, workdir: Path, seconds: int, kafka: str | None) -> None:
        wrk = shutil.which("wrk")
        nginx = shutil.which("nginx")
        if not wrk or not nginx:
            raise SystemExit("wrk and nginx are needed: apt-get install -y wrk nginx")
        # Only nginx and wrk are used of bench's tool set: no build of the others here.
        tools = SimpleNamespace(nginx=nginx, wrk=wrk, vegeta=str(VEGETA))
        self.bench = Bench(tools, workdir)  # type: ignore[arg-type]
        self.workdir = workdir
        self.seconds = seconds
        self.kafka = kafka
        self.keys_dir = workdir / "apikeys"
        self.keys_dir.mkdir()
        from modelserving.sidecar.apikeys import hash_api_key

        (self.keys_dir / "bench").write_text(hash_api_key(API_KEY))
        self.upstream: Proc | None = None

    @contextlib.contextmanager
    def running_upstream(self) -> Iterator[None]:
        self.bench.upstream_port = free_port()
        self.upstream = self.bench.nginx(
            "upstream", "upstream.conf", LOAD_CORE, port=self.bench.upstream_port
        )
        try:
            yield
        finally:
            self.upstream.stop()

    # ------------------------------------------------------------ what is measured

    def direct(self) -> Configuration:
        @contextlib.contextmanager
        def start() -> Iterator[tuple[Proc | None, load.Target]]:
            yield None, load.Target(self.bench.upstream_port)

        return Configuration("direct (nginx upstream)", start)

    def bare_proxy(self, uvloop: bool) -> Configuration:
        @contextlib.contextmanager
        def start() -> Iterator[tuple[Proc | None, load.Target]]:
            port = free_port()
            cmd = [sys.executable, "-m", "bench.aiohttp_proxy", "--port", str(port),
                   "--upstream", f"http://127.0.0.1:{self.bench.upstream_port}"]  # fmt: skip
            if uvloop:
                cmd.append("--uvloop")
            proc = Proc("aiohttp-proxy", cmd, PROXY_CORE, self.workdir, port=port)
            try:
                yield proc, load.Target(port)
            finally:
                proc.stop()

        return Configuration(f"bare aiohttp proxy{', uvloop' if uvloop else ''}", start)

    def sidecar(
        self, log_on: bool, code: Path | None = None, label: str = "", logging: dict | None = None
    ) -> Configuration:
        """The sidecar with API key auth; `code` is a tree holding another `modelserving`;
        `logging` adds to the log-on configuration's `logging` section."""

        @contextlib.contextmanager
        def start() -> Iterator[tuple[Proc | None, load.Target]]:
            port = free_port()
            config = self._config(port, log_on, logging or {})
            run = "from modelserving.cli import main; raise SystemExit(main())"
            if code is not None:
                # Before the working directory and the editable install: the baseline's code wins.
                run = f"import sys; sys.path.insert(0, {str(code)!r}); {run}"
            cmd = [sys.executable, "-c", run, "sidecar", "--config", str(config),
                   "--log-level", "WARNING"]  # fmt: skip
            env = {"POD_NAME": "measure"}
            proc = Proc("sidecar", cmd, PROXY_CORE, self.workdir, env=env, port=port)
            try:
                headers = {"Authorization": f"ApiKey {API_KEY}"}
                yield proc, load.Target(port, headers=headers)
            finally:
                proc.stop(timeout=30)

        name = f"sidecar{label}, apiKey, log {'on' if log_on else 'off'}"
        return Configuration(name, start)

    def _config(self, port: int, log_on: bool, logging: dict) -> Path:
        config: dict = {
            "serving": {"name": load.MODEL, "namespace": "bench"},
            "model": {"name": load.MODEL, "version": 1, "modelId": 1},
            "listen": {"host": "127.0.0.1", "port": port},
            "upstream": {"url": f"http://127.0.0.1:{self.bench.upstream_port}"},
            "auth": {"mode": "apiKey", "apiKeysDir": str(self.keys_dir)},
            "logging": {"mode": "NONE"},
        }
        if log_on and self.kafka:
            topic = f"measure-{uuid.uuid4().hex[:10]}"
            create_topic(self.kafka, topic)
            config["logging"] = {"mode": "ALL", "topic": topic, "bootstrapServers": self.kafka,
                                 "spoolDir": str(self.workdir / f"spool-{port}"),
                                 **logging}  # fmt: skip
        path = self.workdir / f"sidecar-{port}.json"
        path.write_text(json.dumps(config))
        return path

    # ------------------------------------------------------------ one measurement

    def measure(self, configuration: Configuration, latency: bool) -> Result:
        with configuration.start() as (proc, target):
            measured = proc or self.upstream
            assert measured is not None
            p50 = p99 = at_rate = None
            if latency:
                # Before the saturation run: the inference log then has no backlog to catch up on.
                load.vegeta(str(VEGETA), target, self.workdir, LATENCY_RATE, 1)  # warm-up
                cpu_before = measured.cpu_seconds()
                lat = load.vegeta(str(VEGETA), target, self.workdir, LATENCY_RATE, 3)
                at_rate = (measured.cpu_seconds() - cpu_before) / lat.requests * 1e6
                p50, p99 = lat.p50_ms, lat.p99_ms
            load.wrk(self.bench.tools.wrk, target, self.workdir, seconds=1)  # warm-up
            cpu_before, started = measured.cpu_seconds(), time.monotonic()
            with PeakRss(measured) as rss:
                sat = load.wrk(self.bench.tools.wrk, target, self.workdir, seconds=self.seconds)
            wall = time.monotonic() - started
            cpu = measured.cpu_seconds() - cpu_before
            share = cpu / wall
            return Result(
                rps=sat.rps,
                requests=sat.requests,
                cpu_share=share,
                cpu_us_per_request=cpu / sat.requests * 1e6,
                rps_per_core=sat.rps / share,
                rss_peak_mib=rss.peak_mib,
                p50_ms=p50,
                p99_ms=p99,
                cpu_us_at_rate=at_rate,
            )


def mean(values: list[float]) -> float:
    """The median: one round disturbed by other work on a shared machine does not move it."""
    return statistics.median(values)


def report(results: dict[str, list[Result]], reference: str, latency: bool) -> str:
    ref = mean([r.rps_per_core for r in results[reference]]) if results.get(reference) else None
    direct = results.get("direct (nginx upstream)")
    head = f"{'configuration':44} {'rps':>7} {'core':>5} {'rps/core':>8} {'µs/req':>7} "
    head += f"{'x bare':>6} {'RSS MiB':>7}"
    if latency:
        head += f" {'+p50 ms':>8} {'+p99 ms':>8} {'µs/req@' + str(LATENCY_RATE):>11}"
    lines = [head]
    for name, runs in results.items():
        if not runs:
            continue
        per_core = mean([r.rps_per_core for r in runs])
        line = (
            f"{name:44} {mean([r.rps for r in runs]):7.0f} {mean([r.cpu_share for r in runs]):5.2f}"
            f" {per_core:8.0f} {mean([r.cpu_us_per_request for r in runs]):7.1f}"
            f" {per_core / ref if ref else 0:6.2f} {max(r.rss_peak_mib for r in runs):7.1f}"
        )
        if latency and direct and runs[0].p50_ms is not None:
            p50 = mean([r.p50_ms or 0 for r in runs]) - mean([r.p50_ms or 0 for r in direct])
            p99 = mean([r.p99_ms or 0 for r in runs]) - mean([r.p99_ms or 0 for r in direct])
            at_rate = mean([r.cpu_us_at_rate or 0 for r in runs])
            line += f" {p50:+8.3f} {p99:+8.3f} {at_rate:11.0f}"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="wrk seconds per configuration")
    parser.add_argument("--rounds", type=int, default=1, help="passes over all configurations")
    parser.add_argument(
        "--latency", action="store_true", help=f"also p50/p99 at {LATENCY_RATE} rps"
    )
    parser.add_argument("--baseline", help="git revision whose sidecar is measured alongside")
    parser.add_argument(
        "--candidate",
        help="git revision to measure instead of the working tree (which others may be changing)",
    )
    parser.add_argument("--no-log-off", action="store_true", help="skip the log-off sidecar")
    parser.add_argument(
        "--log-variant", action="append", default=[], metavar="LABEL=JSON",
        help="also a log-on sidecar with these logging settings, e.g. "
        'flush20=\'{"spoolFlushIntervalSeconds": 0.02}\' (repeatable)',
    )  # fmt: skip
    parser.add_argument("--no-asyncio-bare", action="store_true",
                        help="skip the bare proxy on asyncio's own loop")  # fmt: skip
    args = parser.parse_args()
    env_json = REPO / ".localenv" / "env.json"
    kafka = json.loads(env_json.read_text()).get("kafka_bootstrap") if env_json.exists() else None
    if args.latency and not VEGETA.exists():
        raise SystemExit(f"--latency needs vegeta at {VEGETA} (make bench builds it)")
    with tempfile.TemporaryDirectory(prefix="measure-sidecar-") as tmp:
        m = Measurement(Path(tmp), args.seconds, kafka)
        configs = []
        if args.latency:
            configs.append(m.direct())
        if not args.no_asyncio_bare:
            configs.append(m.bare_proxy(uvloop=False))
        configs.append(m.bare_proxy(uvloop=True))
        versions: list[tuple[Path | None, str]] = [(None, "")]
        if args.candidate:
            versions = [(tree_at(args.candidate, Path(tmp) / "candidate"),
                         f" @{args.candidate}")]  # fmt: skip
        if args.baseline:
            versions.insert(0, (tree_at(args.baseline, Path(tmp) / "baseline"),
                                f" @{args.baseline}"))  # fmt: skip
        for code, label in versions:
            if not args.no_log_off:
                configs.append(m.sidecar(False, code, label))
            if kafka:
                configs.append(m.sidecar(True, code, label))
                for variant in args.log_variant:
                    name, _, settings = variant.partition("=")
                    configs.append(m.sidecar(True, code, f"{label} [{name}]", json.loads(settings)))
        results: dict[str, list[Result]] = {c.name: [] for c in configs}
        with m.running_upstream():
            for round_ in range(args.rounds):
                for config in configs:
                    print(f"[measure] round {round_ + 1}: {config.name}", file=sys.stderr)
                    try:
                        results[config.name].append(m.measure(config, args.latency))
                    except (
                        Exception
                    ) as exc:  # one configuration failing (broker down) spares the rest
                        print(f"[measure] {config.name} failed: {exc}", file=sys.stderr)
        loadavg = Path("/proc/loadavg").read_text().split()[0]
        pressure = Path("/proc/pressure/cpu")
        waiting = pressure.read_text().split()[2] if pressure.exists() else "?"
        print(f"wrk {args.seconds} s x {args.rounds} round(s) (medians), 64 connections; "
              f"load avg {loadavg}, CPU pressure {waiting}")  # fmt: skip
        print(report(results, "bare aiohttp proxy, uvloop", args.latency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
