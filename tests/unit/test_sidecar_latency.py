"""What the sidecar adds to a prediction's latency: the sidecar (API key auth, cache-free check)
and TF Serving's stand-in run as processes, and requests at a fixed rate go to both side by side,
in one run. Prints p50/p99 of each and the difference; asserts only that every request succeeded.

Short by default (CI); MODELSERVING_LATENCY_RPS and MODELSERVING_LATENCY_SECONDS lengthen it,
e.g. 500 and 10 for the figures in the issue's note.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import yaml

from modelserving_sidecar.auth.api_keys import hash_api_key
from tests.support import tfserving_standin
from tests.support.waiting import wait_for_async

STANDIN = Path(tfserving_standin.__file__)
MODEL = "half_plus_two"
BODY = b'{"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}'
KEY = "latency-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def fire_at_fixed_rate(http, targets, rps: float, seconds: float) -> dict[str, list[float]]:
    """Open loop: one request to each target every 1/rps s, whatever the answers' pace."""
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    statuses: list[int] = []

    async def one(name: str, url: str, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        async with http.post(url, data=BODY, headers=headers) as resp:
            await resp.read()
            statuses.append(resp.status)
        latencies[name].append((time.perf_counter() - started) * 1000)

    tasks = []
    start = time.perf_counter()
    for tick in range(int(rps * seconds)):
        delay = start + tick / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for name, (url, headers) in targets.items():
            tasks.append(asyncio.create_task(one(name, url, headers)))
    await asyncio.gather(*tasks)
    assert set(statuses) == {200}, sorted(set(statuses))
    return latencies


async def test_added_latency_at_a_fixed_rate(tmp_path, capsys):
    rps = float(os.environ.get("MODELSERVING_LATENCY_RPS", "200"))
    seconds = float(os.environ.get("MODELSERVING_LATENCY_SECONDS", "2"))
    upstream_port, sidecar_port = free_port(), free_port()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "bench").write_text(hash_api_key(KEY))
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "serving": {"name": "hpt", "namespace": "demo"},
                "model": {"name": MODEL, "version": 1, "modelId": 1},
                "listen": {"host": "127.0.0.1", "port": sidecar_port},
                "grpc": {"port": 0},  # no gRPC port
                "upstream": {"url": f"http://127.0.0.1:{upstream_port}"},
                "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
            }
        )
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(STANDIN), "--port", str(upstream_port)
        ),
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ),
    ]
    direct = f"http://127.0.0.1:{upstream_port}/v1/models/{MODEL}:predict"
    via_sidecar = f"http://127.0.0.1:{sidecar_port}/v1/models/{MODEL}:predict"
    targets = {"direct": (direct, {}), "sidecar": (via_sidecar, {"Authorization": f"ApiKey {KEY}"})}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def both_up():
                try:
                    for url, headers in targets.values():
                        async with http.post(url, data=BODY, headers=headers) as resp:
                            if resp.status != 200:
                                return False
                    return True
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for_async(both_up, timeout=60, what="the stand-in and the sidecar")
            await fire_at_fixed_rate(http, targets, rps, 0.5)  # warm the pools and the caches
            latencies = await fire_at_fixed_rate(http, targets, rps, seconds)
    finally:
        for process in processes:
            process.terminate()
            await process.wait()
    p50 = {name: statistics.median(values) for name, values in latencies.items()}
    p99 = {name: percentile(values, 0.99) for name, values in latencies.items()}
    with capsys.disabled():
        print(
            f"\nsidecar latency at {rps:.0f} rps each side for {seconds:.0f} s "
            f"({len(latencies['sidecar'])} requests each): "
            f"direct p50 {p50['direct']:.3f} ms p99 {p99['direct']:.3f} ms; "
            f"via sidecar p50 {p50['sidecar']:.3f} ms p99 {p99['sidecar']:.3f} ms; "
            f"added p50 +{p50['sidecar'] - p50['direct']:.3f} ms "
            f"p99 +{p99['sidecar'] - p99['direct']:.3f} ms"
        )
