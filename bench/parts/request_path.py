"""Parts 1 and 2: the request path. One nginx upstream answering at once; in front of it, each
in turn, the proxy under test pinned to its own core; wrk for requests/s at saturation and
vegeta for added latency at fixed rates; resident memory at saturation; log records lost
while the log's destination is down for 10 s at 1,000 rps."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.baselines import BASELINES
from bench.harness import load
from bench.harness.procs import (
    LOAD_CORE,
    PROXY_CORE,
    PeakRss,
    Proc,
    free_port,
    log,
    port_open,
)
from bench.harness.stats import added_latency, as_dict, records_lost, rps_per_core
from bench.harness.tools import Tools

RATES = (200, 1000)
WRK_SECONDS = 5
VEGETA_SECONDS = 5
OUTAGE_SECONDS = 10


@dataclass
class Bench:
    """What every configuration shares: tools, the upstream, a scratch folder."""

    tools: Tools
    workdir: Path
    upstream_port: int = 0
    sidecar: Any = None  # bench.parts.sidecar.SidecarBench once the sidecar can be run

    def nginx(self, name: str, template: str, core: int, **values: int) -> Proc:
        """Start nginx from one of bench/baselines/nginx's templates, with its own state folder."""
        state = self.workdir / name
        (state / "tmp").mkdir(parents=True, exist_ok=True)
        text = (BASELINES / "nginx" / template).read_text().replace("@STATE@", str(state))
        for key, value in values.items():
            text = text.replace(f"@{key.upper()}@", str(value))
        conf = state / "nginx.conf"
        conf.write_text(text)
        cmd = [self.tools.nginx, "-p", str(state), "-c", str(conf), "-e", str(state / "error.log")]
        return Proc(name, cmd, core, self.workdir, port=values["port"])


@dataclass(frozen=True)
class Configuration:
    """One thing put in front of the upstream: how to start it and where to send load."""

    name: str
    start: Callable[[Bench], contextlib.AbstractContextManager[tuple[Proc | None, load.Target]]]
    group: str = "reference"


@contextlib.contextmanager
def direct(bench: Bench) -> Iterator[tuple[Proc | None, load.Target]]:
    yield None, load.Target(bench.upstream_port)


@contextlib.contextmanager
def nginx_proxy(bench: Bench) -> Iterator[tuple[Proc | None, load.Target]]:
    port = free_port()
    proc = bench.nginx(
        "nginx-proxy", "proxy.conf", PROXY_CORE, port=port, upstream_port=bench.upstream_port
    )
    try:
        yield proc, load.Target(port)
    finally:
        proc.stop()


def aiohttp_proxy(uvloop: bool = False) -> Callable[..., Any]:
    @contextlib.contextmanager
    def start(bench: Bench) -> Iterator[tuple[Proc | None, load.Target]]:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "bench.baselines.aiohttp_proxy",
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{bench.upstream_port}",
        ]
        env = {}
        if uvloop:
            cmd.append("--uvloop")
            env["PYTHONPATH"] = with_pylib(bench)
        proc = Proc("aiohttp-proxy", cmd, PROXY_CORE, bench.workdir, env=env, port=port)
        try:
            yield proc, load.Target(port)
        finally:
            proc.stop()

    return start


def with_pylib(bench: Bench) -> str:
    """PYTHONPATH with the benchmark's own packages (uvloop) after the current one."""
    parts = [p for p in (os.environ.get("PYTHONPATH"), bench.tools.pylib) if p]
    return os.pathsep.join(parts)


@contextlib.contextmanager
def kserve_agent(bench: Bench, sink_port: int | None = None) -> Iterator[tuple[Proc, load.Target]]:
    port = free_port()
    cmd = [
        bench.tools.kserve_agent,
        "--port",
        str(port),
        "--component-port",
        str(bench.upstream_port),
    ]
    if sink_port is not None:
        cmd += [
            "--log-url",
            f"http://127.0.0.1:{sink_port}/",
            "--log-mode",
            "all",
            "--inference-service",
            load.MODEL,
            "--namespace",
            "bench",
        ]
    # The agent insists on this variable; empty means "always ready" (no probe of its own).
    env = {"SERVING_READINESS_PROBE": "", "SERVING_LOGGING_LEVEL": "warn"}
    proc = Proc("kserve-agent", cmd, PROXY_CORE, bench.workdir, env=env, port=port)
    try:
        yield proc, load.Target(port)
    finally:
        proc.stop()


class EventSink:
    """nginx on the load core accepting KServe's CloudEvents; counts them from its access log."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.port = free_port()
        self.events_log = bench.workdir / "kserve-sink" / "sink-events.log"
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = self.bench.nginx("kserve-sink", "sink.conf", LOAD_CORE, port=self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()  # nginx flushes its access-log buffer on the way out
            self.proc = None

    def count(self) -> int:
        if not self.events_log.exists():
            return 0
        with self.events_log.open("rb") as f:
            return sum(1 for _ in f)


@contextlib.contextmanager
def kserve_agent_logger(bench: Bench) -> Iterator[tuple[Proc, load.Target]]:
    sink = EventSink(bench)
    sink.start()
    try:
        with kserve_agent(bench, sink.port) as started:
            yield started
    finally:
        sink.stop()


REFERENCES = [
    Configuration("direct", direct),
    Configuration("nginx reverse proxy", nginx_proxy),
    Configuration("bare aiohttp proxy", aiohttp_proxy()),
    Configuration("bare aiohttp proxy, uvloop", aiohttp_proxy(uvloop=True)),
    Configuration("KServe agent, logger off", kserve_agent),
    Configuration("KServe agent, logger on", kserve_agent_logger),
]


def measure(
    bench: Bench, config: Configuration, rates: tuple[int, ...] = RATES, body: str | None = None
) -> dict[str, Any]:
    """One pass over one configuration: saturation, then the fixed `rates`; `body` in place of
    the configuration's request body."""
    with config.start(bench) as (proc, target):
        if body is not None:
            target = dataclasses.replace(target, body=body)
        load.wrk(bench.tools.wrk, target, bench.workdir, seconds=1)  # warm-up
        measured = proc or _upstream_proc(bench)
        cpu_before, started = measured.cpu_seconds(), time.monotonic()
        with PeakRss(measured) as rss:
            sat = load.wrk(bench.tools.wrk, target, bench.workdir, seconds=WRK_SECONDS)
        wall = time.monotonic() - started
        cpu = measured.cpu_seconds() - cpu_before
        result: dict[str, Any] = {
            "loadavg_1m": loadavg(),
            "saturation": as_dict(sat),
            "cpu_share": round(cpu / wall, 3),
            "rps_per_core": round(rps_per_core(sat.rps, cpu, wall) or 0),
            "rss_peak_mib": round(rss.peak_mib, 1),
            "latency": {},
        }
        result["cpu_us_at_rate"] = {}
        for rate in rates:
            cpu_before = measured.cpu_seconds()
            lat = load.vegeta(bench.tools.vegeta, target, bench.workdir, rate, VEGETA_SECONDS)
            result["latency"][str(rate)] = as_dict(lat)
            # At a fixed rate, not saturated: what a request costs where no batching helps.
            if lat.requests:
                cpu_us = (measured.cpu_seconds() - cpu_before) / lat.requests * 1e6
                result["cpu_us_at_rate"][str(rate)] = round(cpu_us, 1)
        result["rss_after_mib"] = round(measured.rss_mib(), 1)
    return result


def loadavg() -> float:
    """The machine's 1-minute load average: other work on a shared machine shows here."""
    return float(Path("/proc/loadavg").read_text().split()[0])


_UPSTREAM: dict[int, Proc] = {}


def _upstream_proc(bench: Bench) -> Proc:
    return _UPSTREAM[bench.upstream_port]


@contextlib.contextmanager
def upstream(bench: Bench) -> Iterator[Proc]:
    bench.upstream_port = free_port()
    proc = bench.nginx("upstream", "upstream.conf", LOAD_CORE, port=bench.upstream_port)
    _UPSTREAM[bench.upstream_port] = proc
    try:
        yield proc
    finally:
        proc.stop()
        _UPSTREAM.pop(bench.upstream_port, None)


def run_request_path(
    bench: Bench, configurations: list[Configuration], runs: int = 2
) -> dict[str, Any]:
    """Every configuration, `runs` times over, interleaved so that drift hits all alike."""
    results: dict[str, list[dict[str, Any]]] = {c.name: [] for c in configurations}
    with upstream(bench):
        for run in range(1, runs + 1):
            for config in configurations:
                log(f"request path, run {run}: {config.name}")
                try:
                    results[config.name].append(measure(bench, config))
                except Exception as exc:  # one configuration failing must not end the others
                    log(f"{config.name} failed: {exc}")
                    results[config.name].append({"error": str(exc)[-2000:]})
    for runs_of_config in results.values():
        for i, result in enumerate(runs_of_config):
            base = results["direct"][i] if i < len(results["direct"]) else None
            if "error" in result or not base or "error" in base:
                continue
            result["added_ms"] = {
                rate: added_latency(_lat(result, rate), _lat(base, rate))
                for rate in result["latency"]
            }
    return {
        "configurations": [c.name for c in configurations],
        "groups": {c.name: c.group for c in configurations},
        "results": results,
    }


def _lat(result: dict[str, Any], rate: str) -> Any:
    from bench.harness.stats import LatencyResult

    return LatencyResult(**result["latency"][rate])


# ------------------------------------------------------------------ outages (part 2)


@dataclass
class Outage:
    """A constant load of `rate` rps for `seconds`; the destination down between `down_at` and
    `down_at + OUTAGE_SECONDS`."""

    rate: int = 1000
    seconds: int = 25
    down_at: float = 5.0
    events: list[str] = field(default_factory=list)


def run_vegeta_background(bench: Bench, target: load.Target, outage: Outage) -> Callable[[], Any]:
    """Start vegeta at a constant rate in a thread; the returned call waits for its report."""
    box: dict[str, Any] = {}

    def attack() -> None:
        try:
            box["result"] = load.vegeta(
                bench.tools.vegeta,
                target,
                bench.workdir / "outage",
                outage.rate,
                outage.seconds,
                check=False,
            )
        except BaseException as exc:
            box["error"] = exc

    (bench.workdir / "outage").mkdir(exist_ok=True)
    thread = threading.Thread(target=attack, daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    return wait


def kserve_sink_outage(bench: Bench, outage: Outage) -> dict[str, Any]:
    """KServe's agent with its logger on while its HTTP sink is down for 10 s."""
    sink = EventSink(bench)
    sink.start()
    with upstream(bench), kserve_agent(bench, sink.port) as (proc, target):
        load.wrk(bench.tools.wrk, target, bench.workdir, seconds=1)
        before = _settled_count(sink.count)
        with PeakRss(proc) as rss:
            wait = run_vegeta_background(bench, target, outage)
            time.sleep(outage.down_at)
            sink.stop()
            time.sleep(OUTAGE_SECONDS)
            sink.start()
            lat = wait()
        time.sleep(3)  # let the agent's workers deliver what they still hold
    sink.stop()
    delivered = sink.count() - before
    answered = round(lat.requests * lat.success)
    return {
        "rate": outage.rate,
        "seconds": outage.seconds,
        "sink_down_seconds": OUTAGE_SECONDS,
        "requests_answered": answered,
        "events_expected": 2 * answered,  # log-mode all: one request and one response event
        "events_delivered": delivered,
        "events_lost": records_lost(2 * answered, delivered),
        "rss_peak_mib": round(rss.peak_mib, 1),
        "latency": as_dict(lat),
    }


def _settled_count(count: Callable[[], int], quiet: float = 1.5) -> int:
    """A count once it stopped moving (nginx flushes its access log every second)."""
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.3)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def wait_port_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.1)
