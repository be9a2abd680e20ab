"""The gRPC path: TF Serving's PredictionService/Predict through our sidecar (API-key auth,
inference log on into the real broker: REST's "sidecar, apiKey, log on" with its gRPC port)
beside a direct call to a gRPC upstream that answers at once (bench/baselines/grpc_upstream, on
the load core) and a bare grpc.aio proxy (bench/baselines/grpc_aio_proxy, the floor of the
sidecar's gRPC stack), and beside the REST path's direct call and log-on sidecar measured in the
same passes, so that both protocols are set side by side under the same machine state.

ghz does over gRPC what wrk and vegeta do over REST: calls/s at saturation (requests per core
from the sidecar's CPU time, as REST's) and latency at the same fixed rates, added latency being
a percentile minus the direct gRPC call's in the same pass. The request is REST's request as a
PredictRequest (the same tensor); every call the sidecar answered must land on the topic as a
record of protocol grpc, and they are counted there.

Then gRPC's own case, a large tensor (1 MiB of float32s in one row, `large_passes`): the REST
sidecar, the bare grpc.aio proxy and the gRPC sidecar, saturated, log on.

    python -m bench.parts.grpc_path [--runs 2] [--out grpc.json]  # this part alone
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness import load
from bench.harness.procs import LOAD_CORE, PROXY_CORE, BenchError, PeakRss, Proc, free_port, log
from bench.harness.stats import LatencyResult, added_latency, as_dict, records_lost, rps_per_core
from bench.harness.topics import wait_topic
from bench.parts.request_path import (
    RATES,
    VEGETA_SECONDS,
    WRK_SECONDS,
    Bench,
    Configuration,
    direct,
    loadavg,
    measure,
    upstream,
)
from bench.parts.sidecar import API_KEY, ONE_VERSION, SidecarBench
from modelserving.inferencelog.record import HEADER_PROTOCOL, PROTOCOL_GRPC
from modelserving.tfserving import serving_apis_pb2, tensor_pb2, types_pb2

REST_DIRECT = "direct"  # the names request_path and the REST tables give these two
REST_SIDECAR = ONE_VERSION
GRPC_DIRECT = "direct gRPC"
GRPC_BARE = "bare grpc.aio proxy"
GRPC_SIDECAR = "sidecar over gRPC, apiKey, log on"
# (protocol, its direct call, its sidecar): each sidecar's latency is added over its own direct.
PROTOCOLS = (("REST", REST_DIRECT, REST_SIDECAR), ("gRPC", GRPC_DIRECT, GRPC_SIDECAR))
# The floor of the gRPC sidecar's stack, measured beside it; its latency is added over the
# direct gRPC call too.
FLOORS = {GRPC_BARE: GRPC_DIRECT}
# gRPC's case: a large tensor, one row of 1 MiB of float32s (262,144 values, an image's pixels
# scaled to [0, 1] with 4 decimals), packed in tensor_content as TF Serving's clients send one;
# over REST, the same row as `instances` JSON (about 2 MiB). Saturated only: at 1,000 calls/s
# it would be a gigabyte a second.
LARGE = ", 1 MiB tensor"
LARGE_VALUES = 256 * 1024
LARGE_CONFIGURATIONS = (REST_SIDECAR + LARGE, GRPC_BARE + LARGE, GRPC_SIDECAR + LARGE)
# What the upstreams answer: nginx's fixed predict body (bench/baselines/nginx/upstream.conf) and
# its model status, versions 3, 2 and 1 AVAILABLE.
PREDICTIONS = [[2.5], [3.0]]
VERSIONS = (3, 2, 1)


def float_tensor(rows: list[list[float]]) -> tensor_pb2.TensorProto:
    """A DT_FLOAT tensor of the rows (as TF Serving's REST `instances` of equal length)."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    tensor.float_val.extend(v for row in rows for v in row)
    for size in (len(rows), len(rows[0]) if rows else 0):
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def predict_request() -> bytes:
    """REST's request (load.PREDICT_BODY) as a PredictRequest: the same tensor."""
    request = serving_apis_pb2.PredictRequest()
    request.model_spec.name = load.MODEL
    request.inputs["instances"].CopyFrom(float_tensor(json.loads(load.PREDICT_BODY)["instances"]))
    return request.SerializeToString()


def large_row() -> list[float]:
    """The large tensor's one row: pixel values 0..255 scaled to [0, 1], with 4 decimals."""
    return [round(i % 256 / 255, 4) for i in range(LARGE_VALUES)]


def large_predict_body() -> str:
    """REST's request of the large tensor: its row as `instances`, as written by a client."""
    return json.dumps({"instances": [large_row()]})


def large_predict_request() -> bytes:
    """gRPC's request of the large tensor: a [1, 262144] DT_FLOAT in tensor_content."""
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    tensor.tensor_content = struct.pack(f"<{LARGE_VALUES}f", *large_row())
    for size in (1, LARGE_VALUES):
        tensor.tensor_shape.dim.add(size=size)
    request = serving_apis_pb2.PredictRequest()
    request.model_spec.name = load.MODEL
    request.inputs["instances"].CopyFrom(tensor)
    return request.SerializeToString()


def predict_response() -> bytes:
    response = serving_apis_pb2.PredictResponse()
    response.model_spec.name = load.MODEL
    response.model_spec.version.value = 1
    response.outputs["predictions"].CopyFrom(float_tensor(PREDICTIONS))
    return response.SerializeToString()


def model_status() -> bytes:
    status = serving_apis_pb2.GetModelStatusResponse()
    for version in VERSIONS:
        status.model_version_status.add(
            version=version, state=serving_apis_pb2.ModelVersionStatus.AVAILABLE
        )
    return status.SerializeToString()


@dataclass
class GrpcBench:
    """What the gRPC configurations share: the running gRPC upstream and the request file."""

    bench: Bench
    upstream: Proc
    upstream_port: int
    request: Path
    large_request: Path


@contextlib.contextmanager
def grpc_upstream(bench: Bench) -> Iterator[GrpcBench]:
    """bench/baselines/grpc_upstream on the load core, answering Predict and GetModelStatus."""
    folder = bench.workdir / "grpc-upstream"
    folder.mkdir(exist_ok=True)
    files = {
        "request": predict_request(),
        "large": large_predict_request(),
        "predict": predict_response(),
        "status": model_status(),
    }
    for name, data in files.items():
        (folder / f"{name}.bin").write_bytes(data)
    port = free_port()
    cmd = [
        bench.tools.grpc_upstream,
        f"-port={port}",
        f"-predict={folder / 'predict.bin'}",
        f"-status={folder / 'status.bin'}",
    ]
    proc = Proc("grpc-upstream", cmd, LOAD_CORE, bench.workdir, port=port)
    try:
        yield GrpcBench(bench, proc, port, folder / "request.bin", folder / "large.bin")
    finally:
        proc.stop()


@dataclass(frozen=True)
class GrpcConfiguration:
    """One thing put in front of the gRPC upstream (or nothing): how to start it."""

    name: str
    start: Callable[[GrpcBench], contextlib.AbstractContextManager[Started]]


@dataclass(frozen=True)
class Started:
    """A started configuration: its process, where calls go, and its log's topic if any."""

    proc: Proc | None  # None: the direct call, whose upstream is measured
    target: load.GrpcTarget
    topic: str | None = None


@contextlib.contextmanager
def direct_grpc(grpc: GrpcBench) -> Iterator[Started]:
    yield Started(None, load.GrpcTarget(grpc.upstream_port, grpc.request))


@contextlib.contextmanager
def bare_grpc_proxy(grpc: GrpcBench) -> Iterator[Started]:
    """bench/baselines/grpc_aio_proxy on the proxy's core: grpc.aio forwarding bytes, nothing
    else."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bench.baselines.grpc_aio_proxy",
        "--port",
        str(port),
        "--upstream",
        f"127.0.0.1:{grpc.upstream_port}",
    ]
    proc = Proc("grpc-aio-proxy", cmd, PROXY_CORE, grpc.bench.workdir, port=port, cwd=REPO)
    try:
        yield Started(proc, load.GrpcTarget(port, grpc.request))
    finally:
        proc.stop()


def sidecar_grpc(
    side: SidecarBench, log_on: bool = True, code: Path | None = None, **logging: Any
) -> Callable[[GrpcBench], Any]:
    """The sidecar of REST's ONE_VERSION (log on) or of its log-off one, called over its gRPC
    port; REST's upstream (nginx) stays its model-status source, as TF Serving's REST port is
    in a pod. `code`: a tree from `tree_at` whose sidecar runs instead of this one; `logging`
    adds to the log's settings."""

    @contextlib.contextmanager
    def start(grpc: GrpcBench) -> Iterator[Started]:
        port = free_port()
        settings = {"port": port, "upstream": f"127.0.0.1:{grpc.upstream_port}"}
        running = side.running("apiKey", log_on, code=code, grpc=settings, **logging)
        with running as (proc, _, topic):
            proc.wait_port(port)
            metadata = {"authorization": f"ApiKey {API_KEY}"}
            yield Started(proc, load.GrpcTarget(port, grpc.request, metadata), topic)

    return start


def measure_grpc(
    grpc: GrpcBench,
    config: GrpcConfiguration,
    rates: tuple[int, ...] = RATES,
    request: Path | None = None,
) -> dict[str, Any]:
    """One pass over one gRPC configuration, as request_path.measure over REST: saturation,
    then the fixed `rates`; then the log's records of the calls answered, counted on the topic.
    `request`: a file of another request than the configuration's."""
    bench, ok_calls = grpc.bench, 0

    def run(seconds: float, rate: int | None = None) -> LatencyResult:
        nonlocal ok_calls
        target = started.target
        if request is not None:
            target = dataclasses.replace(target, request=request)
        result = load.ghz(bench.tools.ghz, target, bench.workdir, seconds, rate)
        ok_calls += round(result.requests * result.success)
        return result

    with config.start(grpc) as started:
        run(1)  # warm-up
        measured = started.proc or grpc.upstream
        cpu_before, began = measured.cpu_seconds(), time.monotonic()
        with PeakRss(measured) as rss:
            sat = run(WRK_SECONDS)
        wall = time.monotonic() - began
        cpu = measured.cpu_seconds() - cpu_before
        result: dict[str, Any] = {
            "loadavg_1m": loadavg(),
            "saturation": {"rps": sat.rate, **as_dict(sat)},
            "cpu_share": round(cpu / wall, 3),
            "rps_per_core": round(rps_per_core(sat.rate, cpu, wall) or 0),
            "rss_peak_mib": round(rss.peak_mib, 1),
            "latency": {},
            "cpu_us_at_rate": {},
        }
        for rate in rates:
            cpu_before = measured.cpu_seconds()
            lat = run(VEGETA_SECONDS, rate)
            result["latency"][str(rate)] = as_dict(lat)
            if lat.requests:
                cpu_us = (measured.cpu_seconds() - cpu_before) / lat.requests * 1e6
                result["cpu_us_at_rate"][str(rate)] = round(cpu_us, 1)
        result["rss_after_mib"] = round(measured.rss_mib(), 1)
    if started.topic is not None:  # the sidecar has stopped: what it answered is on the topic
        result["records"] = count_records(bench, started.topic, ok_calls)
    return result


def count_records(bench: Bench, topic: str, answered: int) -> dict[str, int]:
    """The records of protocol grpc on the topic against the calls answered OK; none at all
    fails the configuration (a log that writes nothing would look cheapest)."""
    bootstrap = bench.sidecar.bootstrap if bench.sidecar else None
    header = (HEADER_PROTOCOL, PROTOCOL_GRPC.encode())
    total, distinct = wait_topic(bootstrap or "", topic, answered, timeout=60, header=header)
    if distinct == 0:
        raise BenchError(f"no gRPC record reached {topic} of {answered:,} calls answered")
    return {
        "calls_answered": answered,
        "on_topic": distinct,
        "duplicates": total - distinct,
        "lost": records_lost(answered, distinct),
    }


def run_grpc(bench: Bench, runs: int = 2) -> dict[str, Any]:
    """REST's direct call and log-on sidecar, then gRPC's, `runs` passes over the five; then
    the large tensor's passes (`large_passes`)."""
    side: SidecarBench | None = bench.sidecar
    if not bench.tools.ghz or not bench.tools.grpc_upstream:
        return {"notes": ["skipped: ghz or the gRPC upstream was not built"]}
    if side is None or not side.runnable or not side.bootstrap:
        return {"notes": ["skipped: the sidecar or the Kafka broker is not available"]}
    rest = [Configuration(REST_DIRECT, direct), side.configuration(REST_SIDECAR, "apiKey", True)]
    grpc_configs = [
        GrpcConfiguration(GRPC_DIRECT, direct_grpc),
        GrpcConfiguration(GRPC_BARE, bare_grpc_proxy),
        GrpcConfiguration(GRPC_SIDECAR, sidecar_grpc(side)),
    ]
    every: list[Configuration | GrpcConfiguration] = [*rest, *grpc_configs]
    names = [c.name for c in every] + list(LARGE_CONFIGURATIONS)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with upstream(bench), grpc_upstream(bench) as grpc:
        for run in range(1, runs + 1):
            for one in every:
                log(f"gRPC path, run {run}: {one.name}")
                try:
                    if isinstance(one, Configuration):
                        results[one.name].append(measure(bench, one))
                    else:
                        results[one.name].append(measure_grpc(grpc, one))
                except Exception as exc:  # one configuration failing must not end the others
                    log(f"{one.name} failed: {exc}")
                    results[one.name].append({"error": str(exc)[-2000:]})
        large_passes(side, grpc, runs, results)
    add_over_direct(results)
    return {
        "notes": [
            f"ghz {load.GHZ_CONCURRENCY} calls at once over one connection (one channel) for "
            f"gRPC, wrk and vegeta for REST; {WRK_SECONDS} s saturated after a 1 s warm-up, "
            f"{VEGETA_SECONDS} s at each of {', '.join(f'{r:,}' for r in RATES)} calls/s; "
            f"the 1 MiB tensor saturated only, {WRK_SECONDS} s after a 1 s warm-up"
        ],
        "configurations": names,
        "results": results,
    }


def large_passes(
    side: SidecarBench, grpc: GrpcBench, runs: int, results: dict[str, list[dict[str, Any]]]
) -> None:
    """The large tensor, saturated, `runs` passes over the REST sidecar, the bare grpc.aio
    proxy and the gRPC sidecar (log on, so that each pays its log's record of the tensor)."""
    rest_body = large_predict_body()
    rest, bare, sidecar = LARGE_CONFIGURATIONS
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        rest: lambda: measure(
            grpc.bench, side.configuration(rest, "apiKey", True), rates=(), body=rest_body
        ),
        bare: lambda: measure_grpc(
            grpc, GrpcConfiguration(bare, bare_grpc_proxy), (), grpc.large_request
        ),
        sidecar: lambda: measure_grpc(
            grpc, GrpcConfiguration(sidecar, sidecar_grpc(side)), (), grpc.large_request
        ),
    }
    for run in range(1, runs + 1):
        for name, step in steps.items():
            log(f"gRPC path, run {run}: {name}")
            try:
                results[name].append(step())
            except Exception as exc:  # one configuration failing must not end the others
                log(f"{name} failed: {exc}")
                results[name].append({"error": str(exc)[-2000:]})


def add_over_direct(results: dict[str, list[dict[str, Any]]]) -> None:
    """Each sidecar's (and the bare proxy's) `added_ms`: its percentiles minus its own
    protocol's direct call's, pass by pass."""
    pairs = [(base, name) for _, base, name in PROTOCOLS] + [(b, n) for n, b in FLOORS.items()]
    for base_name, name in pairs:
        for i, result in enumerate(results.get(name, [])):
            bases = results.get(base_name, [])
            base = bases[i] if i < len(bases) else None
            if "error" in result or not base or "error" in base:
                continue
            result["added_ms"] = {
                rate: added_latency(
                    LatencyResult(**result["latency"][rate]), LatencyResult(**base["latency"][rate])
                )
                for rate in result["latency"]
            }


def main(argv: list[str] | None = None) -> int:
    """The gRPC part alone, with only the tools it needs (no build of the others), against the
    local environment's broker (`localenv.py up` first); prints the report's section and
    writes the part's JSON, as `make bench` would hold it, to --out."""
    import argparse
    import shutil
    import tempfile

    from bench.harness import tools
    from bench.harness.environment import localenv_settings
    from bench.report.grpc import grpc_lines
    from bench.report.results import PathPart, from_json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runs", type=int, default=2, help="passes over each configuration")
    parser.add_argument("--out", type=Path, help="where to write the part's JSON")
    args = parser.parse_args(argv)
    nginx, wrk = tools.ensure_debian_tools()
    built = tools.Tools(
        nginx=nginx,
        wrk=wrk,
        vegeta=tools.ensure_vegeta(),
        kserve_agent="",
        py_spy=None,
        pylib=None,
        ghz=tools.ensure_ghz(),
        grpc_upstream=tools.ensure_grpc_upstream(),
    )
    workdir = Path(tempfile.mkdtemp(prefix="modelserving-bench-grpc-"))
    bench = Bench(built, workdir)
    side = SidecarBench.prepare(bench, localenv_settings(), kubernetes=False)
    bench.sidecar = side
    try:
        part = run_grpc(bench, args.runs)
    finally:
        side.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(part, indent=2) + "\n")
    if "results" in part:
        print("\n".join(grpc_lines(from_json(PathPart, part))))
    else:
        print("\n".join(part["notes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
