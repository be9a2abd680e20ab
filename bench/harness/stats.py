"""The benchmark's arithmetic: reading wrk, vegeta and ghz output, percentiles, per-core rates and
latency added over the direct path. Pure functions, unit-tested without any tool running."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (50, 90, 99)
_WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
_WRK_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_WRK_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M
)


def percentile(values: Sequence[float], pct: float) -> float:
    """The pct-th percentile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class WrkResult:
    """One saturation run of wrk."""

    rps: float
    requests: int
    non_2xx: int
    socket_errors: int


def parse_wrk(output: str) -> WrkResult:
    """wrk's summary: requests/s, the request count, non-2xx answers and socket errors."""
    rps = _WRK_RPS.search(output)
    total = _WRK_TOTAL.search(output)
    if not rps or not total:
        raise ValueError(f"not a wrk summary:\n{output}")
    non_2xx = _WRK_NON2XX.search(output)
    errors = _WRK_ERRORS.search(output)
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


@dataclass(frozen=True)
class LatencyResult:
    """One constant-rate run of vegeta: latency percentiles in milliseconds."""

    rate: float
    requests: int
    answered: int  # requests that got an HTTP answer, whatever its code
    success: float  # fraction of 2xx answers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def parse_vegeta(report: Mapping[str, Any]) -> LatencyResult:
    """`vegeta report -type=json`: latencies are in nanoseconds."""
    lat = report["latencies"]
    return LatencyResult(
        rate=float(report["rate"]),
        requests=int(report["requests"]),
        answered=int(report["requests"]) - int(report.get("status_codes", {}).get("0", 0)),
        success=float(report["success"]),
        p50_ms=lat["50th"] / 1e6,
        p90_ms=lat["90th"] / 1e6,
        p99_ms=lat["99th"] / 1e6,
        max_ms=lat["max"] / 1e6,
    )


# gRPC codes a call gets from its own channel when no answer came (the call was never answered):
# ghz's "answered" leaves them out, as vegeta's leaves out HTTP's code 0.
_GRPC_UNANSWERED = frozenset({"Unavailable", "Canceled", "DeadlineExceeded"})


def parse_ghz(report: Mapping[str, Any]) -> LatencyResult:
    """ghz's JSON report (`-O json`): latencies in nanoseconds, percentiles of the OK calls;
    `rate` is the calls/s reached, `success` the share of calls answered OK."""
    codes: Mapping[str, int] = report.get("statusCodeDistribution") or {}
    count = int(report["count"])
    ok = int(codes.get("OK", 0))
    at = {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    if ok and not all(p in at for p in PERCENTILES):
        raise ValueError(f"ghz's report lacks a percentile of {PERCENTILES}: {sorted(at)}")
    return LatencyResult(
        rate=float(report["rps"]),
        requests=count,
        answered=count - sum(n for code, n in codes.items() if code in _GRPC_UNANSWERED),
        success=ok / count if count else 0.0,
        p50_ms=at.get(50, 0.0),
        p90_ms=at.get(90, 0.0),
        p99_ms=at.get(99, 0.0),
        max_ms=report["slowest"] / 1e6 if ok else 0.0,
    )


def added_latency(measured: LatencyResult, direct: LatencyResult) -> dict[str, float]:
    """Latency a proxy adds over the direct path at the same rate, per percentile, in ms."""
    return {
        f"p{p}": round(getattr(measured, f"p{p}_ms") - getattr(direct, f"p{p}_ms"), 3)
        for p in PERCENTILES
    }


def rps_per_core(rps: float, cpu_seconds: float, wall_seconds: float) -> float | None:
    """Requests per second per fully used core: rps over the share of a core the proxy used.

    The proxy is pinned to one core, so its share is at most 1; a proxy starved by the load
    generator (it used less than its core) is credited for the core time it did use."""
    if wall_seconds <= 0 or cpu_seconds <= 0:
        return None
    return rps / (cpu_seconds / wall_seconds)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def records_lost(answered: int, delivered: int) -> int:
    """Requests answered whose log record never reached the sink or topic (never negative:
    a retry that delivered a record twice is not a loss)."""
    return max(answered - delivered, 0)


def as_dict(result: WrkResult | LatencyResult) -> dict[str, Any]:
    return asdict(result)


def parse_proc_stat_cpu(stat_line: str, clock_ticks: int) -> float:
    """utime + stime, in seconds, from a /proc/PID/stat line (the command may hold spaces)."""
    fields = stat_line.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def parse_status_kib(status_text: str, field: str = "VmRSS") -> int:
    """A memory field in KiB from a /proc/PID/status text: VmRSS (resident now), VmHWM (its
    peak); 0 for a process without memory."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def top_frames(collapsed: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """From py-spy's collapsed stacks (`frame;frame;... count` a line): the functions by own
    time and by inclusive time, each as (frame, percent of samples), and the sample count."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(frame, round(100 * n / total, 1)) for frame, n in ordered]

    return (ranked(own), ranked(inclusive), total) if total else ([], [], 0)


def by_package(own: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Own time summed per top-level package (`aiohttp`, `modelserving`, `asyncio`, ...), from
    frames named like py-spy's `func (package/module.py:line)`."""
    totals: dict[str, float] = {}
    for frame, share in own:
        where = frame.rpartition(" (")[2].rstrip(")")
        path = where.rpartition(":")[0] or where
        package = (
            path.split("/")[0].removesuffix(".py") if "/" in path else path.removesuffix(".py")
        )
        totals[package or "?"] = totals.get(package or "?", 0.0) + share
    return sorted(((k, round(v, 1)) for k, v in totals.items()), key=lambda kv: -kv[1])
