"""The load generators, on their own core: wrk for requests/s at saturation, vegeta for latency
at a constant rate, and ghz for both over gRPC. Every run is bounded in time and goes to this
machine only (127.0.0.1, or a pod address of the local environment's pod network, which it
routes to this machine)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import REPO
from bench.harness.procs import LOAD_CORE, BenchError, run_pinned
from bench.harness.stats import LatencyResult, WrkResult, parse_ghz, parse_vegeta, parse_wrk

# The request every configuration answers: a TF Serving predict call with a small body.
PREDICT_BODY = '{"instances": [[1.0], [2.0]]}'
MODEL = "bench"
GHZ_CONCURRENCY = 64  # calls at once, as wrk's 64 connections


@dataclass(frozen=True)
class Target:
    """Where the load goes and what it sends."""

    port: int
    path: str = f"/v1/models/{MODEL}:predict"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = PREDICT_BODY
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.headers}


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk(
    wrk_bin: str, target: Target, workdir: Path, seconds: int = 5, connections: int = 64
) -> WrkResult:
    """Saturate the target with one wrk thread for `seconds`."""
    script = workdir / "wrk-post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(target.body)}"]
    lines += [
        f"wrk.headers[ {_lua_string(k)} ] = {_lua_string(v)}"
        for k, v in target.all_headers().items()
    ]
    script.write_text("\n".join(lines) + "\n")
    out = run_pinned(
        [
            wrk_bin,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            target.url,
        ],
        LOAD_CORE,
        timeout=seconds + 30,
    )
    result = parse_wrk(out)
    if result.non_2xx or result.socket_errors:
        raise BenchError(
            f"wrk got {result.non_2xx} non-2xx answers and {result.socket_errors} socket errors "
            f"of {result.requests} from {target.url}"
        )
    return result


def vegeta(
    vegeta_bin: str, target: Target, workdir: Path, rate: int, seconds: float, check: bool = True
) -> LatencyResult:
    """`rate` requests/s for `seconds`, open-loop (vegeta does not wait for slow answers)."""
    body = workdir / "vegeta-body.json"
    body.write_text(target.body)
    targets = workdir / "vegeta-targets.txt"
    head = "\n".join(f"{k}: {v}" for k, v in target.all_headers().items())
    targets.write_text(f"POST {target.url}\n{head}\n@{body}\n\n")
    results = workdir / "vegeta-results.bin"
    run_pinned(
        [
            vegeta_bin,
            "attack",
            f"-rate={rate}/s",
            f"-duration={seconds}s",
            "-timeout=10s",
            f"-targets={targets}",
            f"-output={results}",
        ],
        LOAD_CORE,
        timeout=seconds + 60,
    )
    report = run_pinned([vegeta_bin, "report", "-type=json", str(results)], LOAD_CORE, 60)
    result = parse_vegeta(json.loads(report))
    if check and result.success < 0.999:
        raise BenchError(f"vegeta got {result.success:.1%} 2xx answers from {target.url}")
    return result


@dataclass(frozen=True)
class GrpcTarget:
    """Where gRPC load goes: a port serving TF Serving's PredictionService, the metadata sent
    with every call, and the file holding the serialized request."""

    port: int
    request: Path
    metadata: Mapping[str, str] = field(default_factory=dict)
    proto: Path = REPO / "modelserving" / "tfserving" / "serving_apis.proto"
    call: str = "tensorflow.serving.PredictionService/Predict"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def ghz(
    ghz_bin: str,
    target: GrpcTarget,
    workdir: Path,
    seconds: float,
    rate: int | None = None,
    concurrency: int = GHZ_CONCURRENCY,
    check: bool = True,
) -> LatencyResult:
    """`concurrency` calls at once over one connection (one channel, as a gRPC client holds),
    as fast as answered, or at `rate` calls/s, for `seconds`; one core for ghz (--cpus 1).

    Calls still running at the end are waited for (--duration-stop wait), so every call counted
    was answered or failed, none cut off by ghz itself."""
    report = workdir / "ghz-report.json"
    cmd = [
        ghz_bin,
        "--insecure",
        f"--proto={target.proto}",
        f"--import-paths={REPO}",
        f"--call={target.call}",
        f"--binary-file={target.request}",
        "--disable-template-functions",
        "--disable-template-data",
        "--cpus=1",
        f"--concurrency={concurrency}",
        "--connections=1",
        f"--duration={seconds}s",
        "--duration-stop=wait",
        "--timeout=10s",
        "--format=json",
        f"--output={report}",
    ]
    if target.metadata:
        cmd.append(f"--metadata={json.dumps(dict(target.metadata))}")
    if rate:
        cmd.append(f"--rps={rate}")
    run_pinned([*cmd, target.address], LOAD_CORE, timeout=seconds + 60)
    result = parse_ghz(json.loads(report.read_text()))
    if check and result.success < 0.999:
        raise BenchError(f"ghz got {result.success:.1%} OK answers from {target.address}")
    return result
