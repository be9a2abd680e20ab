"""The report's gRPC section: the sidecar over gRPC beside REST, bare and direct calls, all
measured in the same passes."""

from __future__ import annotations

from collections.abc import Callable

from bench.parts.grpc_path import (
    FLOORS,
    GRPC_BARE,
    GRPC_SIDECAR,
    LARGE,
    LARGE_CONFIGURATIONS,
    PROTOCOLS,
    REST_SIDECAR,
)
from bench.report.cells import both, notes_lines, pairs
from bench.report.results import Failed, Pass, PathPart, Skipped


def grpc_lines(part: PathPart | Skipped) -> list[str]:
    """The gRPC path beside REST, both measured in the same passes: requests per core at
    saturation, latency at 1,000 rps, and what each sidecar adds over its own protocol's direct
    call at 200 and 1,000 rps; for the gRPC sidecar, its records counted on the topic."""
    if isinstance(part, Skipped):
        return notes_lines(part.notes)
    results = part.results
    lines = [
        "TF Serving's `PredictionService/Predict` through our sidecar's gRPC port (API-key "
        "auth, inference log on into the real broker: the sidecar of REST's \"sidecar, apiKey, "
        "log on\") and straight to a gRPC upstream that answers at once, beside REST's direct "
        "call and the same sidecar over REST, and a bare grpc.aio proxy "
        "(`bench/baselines/grpc_aio_proxy`: bytes forwarded, no auth, no log; the floor of the "
        "sidecar's gRPC stack, as the bare aiohttp proxy is of REST's), all in each pass. The "
        "gRPC upstream is `bench/baselines/grpc_upstream` (grpc-go, requests read as bytes, a "
        "fixed PredictResponse of the REST upstream's predictions) on the load core; the request "
        "is REST's request as a PredictRequest (the same tensor). gRPC load: ghz, 64 calls at "
        "once over one connection, with our `.proto` files; saturated 5 s after a 1 s warm-up, "
        "then 5 s at 200 and at 1,000 calls/s. Added latency is over the direct call of the same "
        "protocol in the same pass.",
        "",
        "| configuration | protocol | requests/s per core (saturated) | rate reached at 1,000 "
        "rps | p50 / p99 at 1,000 rps, ms | added p50 / p99 at 200 rps, ms | added p50 / p99 "
        "at 1,000 rps, ms | records on the topic / calls answered |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pair(get: Callable[[Pass, str], float]) -> Callable[[Pass], str]:
        return lambda r: f"{get(r, 'p50'):.3f} / {get(r, 'p99'):.3f}"

    def measured(r: Pass, p: str) -> float:
        return float(getattr(r.latency["1000"], f"{p}_ms"))

    def added(rate: str) -> Callable[[Pass], str]:
        return pair(lambda r, p: float(getattr(r.added_ms[rate], p)))  # type: ignore[index]

    def records(r: Pass) -> str:
        return f"{r.records.on_topic:,} / {r.records.calls_answered:,}"  # type: ignore[union-attr]

    rows: list[tuple[str, str, str | None]] = []  # (configuration, protocol, its direct call)
    for protocol, base, sidecar in PROTOCOLS:
        rows.append((base, protocol, None))
        rows += [(floor, protocol, base) for floor, of in FLOORS.items() if of == base]
        rows.append((sidecar, protocol, base))
    for name, protocol, base in rows:
        runs = results.get(name)
        if runs is None:
            continue
        cells = [
            both(runs, lambda r: r.rps_per_core, 0),
            both(runs, lambda r: round(r.latency["1000"].rate), 0),
            pairs(runs, pair(measured)),
            pairs(runs, added("200")) if base else "",
            pairs(runs, added("1000")) if base else "",
            pairs(runs, records) if name == GRPC_SIDECAR else "",
        ]
        lines.append(f"| {name} | {protocol} | " + " | ".join(cells) + " |")
    ratios = [
        g.rps_per_core / r.rps_per_core
        for g, r in zip(results.get(GRPC_SIDECAR, []), results.get(REST_SIDECAR, []), strict=False)
        if _measured(g) and _measured(r)
    ]
    if ratios:
        shown = " / ".join(f"{v:.2f}" for v in ratios)
        lines += [
            "",
            f"Requests per core, the sidecar over gRPC over the sidecar over REST: "
            f"{shown} (pass by pass).",
        ]
    return lines + _large_lines(part)


def _large_lines(part: PathPart) -> list[str]:
    """The 1 MiB tensor, saturated: each configuration's requests per core and its share of a
    core, the gRPC sidecar's records on the topic, and the ratios the issue asks for."""
    results = part.results
    if not any(results.get(name) for name in LARGE_CONFIGURATIONS):
        return []
    lines = [
        "",
        "A 1 MiB tensor (one row of 262,144 float32s: over gRPC packed in `tensor_content`, as TF "
        "Serving's clients send one; over REST the same row as `instances` JSON, about 2 MiB), "
        "each configuration saturated 5 s after a 1 s warm-up, log on (the record of each call "
        "holds the first 256 KiB of its JSON, maxPayloadBytes' default).",
        "",
        "| configuration | requests/s per core (saturated) | requests/s | share of its core | "
        "records on the topic / calls answered |",
        "| --- | --- | --- | --- | --- |",
    ]

    def records(r: Pass) -> str:
        if r.records is None:
            return ""
        return f"{r.records.on_topic:,} / {r.records.calls_answered:,}"

    for name in LARGE_CONFIGURATIONS:
        runs = results.get(name, [])
        if not runs:
            continue
        cells = [
            both(runs, lambda r: r.rps_per_core, 0),
            both(runs, lambda r: r.saturation.rps, 0),
            both(runs, lambda r: r.cpu_share, 2),
            pairs(runs, records),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sentences = []
    for over, label in ((REST_SIDECAR, "the sidecar over REST"), (GRPC_BARE, "the bare proxy")):
        ratios = [
            g.rps_per_core / r.rps_per_core
            for g, r in zip(
                results.get(GRPC_SIDECAR + LARGE, []), results.get(over + LARGE, []), strict=False
            )
            if _measured(g) and _measured(r)
        ]
        if ratios:
            shown = " / ".join(f"{v:.2f}" for v in ratios)
            sentences.append(
                f"1 MiB tensor, requests per core, the sidecar over gRPC over {label}: {shown} "
                "(pass by pass)."
            )
    return [*lines, "", *sentences] if sentences else lines


def _measured(run: Pass | Failed) -> bool:
    return isinstance(run, Pass) and bool(run.rps_per_core)
