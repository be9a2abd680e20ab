"""The inference log across process deaths: a process killed with SIGKILL in a broker outage
loses nothing (the next one replays the spool), and SIGTERM delivers what was queued.

The process under test is this file run as a script: a small driver that opens the real
pipeline, submits exchanges, says how far it got on stdout, and waits for a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

DRIVER = Path(__file__).resolve()


async def drive(args: argparse.Namespace) -> None:
    import prometheus_client

    from modelserving.sidecar.config import parse_config
    from modelserving.sidecar.exchange import Exchange
    from modelserving.sidecar.inference_log import open_inference_log

    config = parse_config(
        {
            "serving": {"name": "mnist", "namespace": "demo"},
            "model": {"name": "mnist", "version": 1, "modelId": 17},
            "logging": {
                "mode": "ALL",
                "topic": args.topic,
                "bootstrapServers": args.bootstrap,
                "spoolDir": args.spool,
                "producerStallSeconds": 3,
                "sendTimeoutSeconds": 5,
            },
        }
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    body = json.dumps({"instances": [[0.5] * 300]}).encode()
    async with open_inference_log(config, prometheus_client.CollectorRegistry()) as sink:
        print("READY", flush=True)
        for i in range(args.first, args.first + args.count):
            now = int(time.time() * 1000)
            sink.submit(Exchange(f"req-{i:06d}", now, 200, body, b"{}", None, None, None))
            if args.rate:
                await asyncio.sleep(1 / args.rate)
            elif i % 100 == 0:
                await asyncio.sleep(0)
            print(f"SUBMITTED {i + 1 - args.first}", flush=True)
        # What was submitted is on disk within the flush interval: from then on a kill loses none.
        await asyncio.sleep(config.logging.spool_flush_interval_seconds * 2)
        print("DONE", flush=True)
        await stop.wait()
    print("CLOSED", flush=True)


def start_driver(topic: str, bootstrap: str, spool: Path, first: int, count: int, rate: float):
    args = ["--topic", topic, "--bootstrap", bootstrap, "--spool", str(spool)]
    args += ["--first", str(first), "--count", str(count), "--rate", str(rate)]
    return subprocess.Popen(
        [sys.executable, str(DRIVER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_line(proc: subprocess.Popen, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the driver did not print {prefix} within {timeout} s")


def delivered_keys(topic: str, bootstrap: str) -> list[str]:
    from modelserving.inferencelog import read_inference_log

    async def read() -> list[str]:
        return [r.key async for r in read_inference_log(topic, bootstrap, from_beginning=True)]

    return asyncio.run(read())


def wait_delivered(topic: str, bootstrap: str, expected: set[str], timeout: float) -> list[str]:
    from waiting import wait_for

    keys: list[str] = []

    def all_there() -> bool:
        keys[:] = delivered_keys(topic, bootstrap)
        return expected <= set(keys)

    wait_for(all_there, timeout, f"{len(expected)} records on {topic}", interval=0.5)
    return keys


def test_sigkill_in_an_outage_then_restart_replays_the_spool(
    local_env, topic, tmp_path, kafka_broker
):
    bootstrap = local_env.kafka_bootstrap
    n = 600
    first = start_driver(topic, bootstrap, tmp_path, first=0, count=n, rate=200)
    try:
        wait_line(first, "SUBMITTED 100", 30)
        kafka_broker.stop()
        wait_line(first, "DONE", 30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
        kafka_broker.start()
    assert list(tmp_path.glob("*.seg")), "the killed process left no spool"
    second = start_driver(topic, bootstrap, tmp_path, first=n, count=0, rate=0)
    try:
        wait_line(second, "DONE", 30)
        keys = wait_delivered(topic, bootstrap, {f"req-{i:06d}" for i in range(n)}, timeout=120)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        second.kill()
    delivered = len(set(keys))
    print(
        f"\nSIGKILL mid-outage: sent {n}, delivered {delivered}, "
        f"duplicated {len(keys) - delivered}, lost {n - delivered}"
    )
    assert delivered == n


def test_sigterm_delivers_what_was_queued(local_env, topic, tmp_path):
    bootstrap = local_env.kafka_bootstrap
    n = 3000
    proc = start_driver(topic, bootstrap, tmp_path, first=0, count=n, rate=0)
    try:
        wait_line(proc, "DONE", 60)
        proc.send_signal(signal.SIGTERM)
        wait_line(proc, "CLOSED", 30)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    # Delivered before the process ended: no second process replays anything here.
    keys = delivered_keys(topic, bootstrap)
    assert set(keys) == {f"req-{i:06d}" for i in range(n)}
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["acked"] == n


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="drive the inference log pipeline")
    for name in ("--topic", "--bootstrap", "--spool"):
        parser.add_argument(name, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0)
    asyncio.run(drive(parser.parse_args()))
