"""What a SIGKILL of the sidecar costs the inference log, for each durability: the real sidecar
process answers predictions at a steady rate (TF Serving's stand-in behind it, the real broker
for the log), is killed mid-flow, and is started again on the same spool, as a restarted
container would be. Then every request answered before the kill is looked for on the topic.

- `spooled`: an answer leaves only once its record is in the spool file, so none is missing.
- `buffered` (the default): records still waiting for the next spool write are lost; they can
  only be ones answered in the moments before the kill (one flush interval and the time to
  encode and write), and how many is printed.

In both, the records Kafka gets twice after the restart are at most those that were in flight
(sent and not yet acknowledged) at the kill: the acknowledged position reaches the disk with each
acknowledged batch, so the restart sends again only what Kafka had not acknowledged.

The flush interval is 200 ms here instead of 5, so that the kill surely finds records waiting
for a write: what `buffered` loses, `spooled` must not.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from tests.support.ports import free_port
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
BODY = b'{"instances": [1.0, 2.0, 5.0]}'
RATE = 400  # requests per second, while the sidecar is killed
BEFORE_KILL = 600  # answered requests before the kill
FLUSH_INTERVAL_SECONDS = 0.2
# buffered: an answer this long before the kill has had its record written (the flush
# interval, the write itself, and room for a busy 2-core machine's scheduling).
WRITTEN_WITHIN_SECONDS = FLUSH_INTERVAL_SECONDS + 0.25
# Small, so that the bound on records sent twice says something at this rate (the default is
# 10,000).
MAX_IN_FLIGHT = 100


class Sidecar:
    """`modelserving sidecar` as a process, started again on the same config (and spool)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(self.config),
            "--log-level",
            "WARNING",
        )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def answered_keys_until_killed(url: str, sidecar: Sidecar) -> dict[str, float]:
    """Predictions at RATE until BEFORE_KILL are answered 200, then a SIGKILL while requests
    are in flight: the request ids answered 200, with when their answers came."""
    answered: dict[str, float] = {}
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            try:
                async with http.post(url, data=BODY) as resp:
                    await resp.read()
                    if resp.status == 200:
                        answered[resp.headers["X-Request-Id"]] = time.monotonic()
            except aiohttp.ClientError:
                pass  # the sidecar died under it: not answered

        tasks = []
        started = time.monotonic()
        while len(answered) < BEFORE_KILL:
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(max(0.0, started + len(tasks) / RATE - time.monotonic()))
            if time.monotonic() - started > 60:
                pytest.fail(f"only {len(answered)} answers in 60 s", pytrace=False)
        await sidecar.kill()
        await asyncio.gather(*tasks)
    return answered


@pytest.mark.parametrize("durability", ["spooled", "buffered"])
async def test_what_a_sigkill_of_the_sidecar_loses_by_durability(
    durability, local_env, topic, upstream, tmp_path, capsys
):
    port = free_port()
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "serving": {"name": "hpt", "namespace": "demo"},
                "model": {"name": MODEL, "version": 1, "modelId": 17},
                "listen": {"host": "127.0.0.1", "port": port},
                "grpc": {"port": 0},  # no gRPC port
                "upstream": {"url": upstream},
                "auth": {"mode": "none"},
                "logging": {
                    "mode": "ALL",
                    "topic": topic,
                    "bootstrapServers": local_env.kafka_bootstrap,
                    "spoolDir": str(tmp_path / "spool"),
                    "durability": durability,
                    "spoolFlushIntervalSeconds": FLUSH_INTERVAL_SECONDS,
                    "maxInFlightRecords": MAX_IN_FLIGHT,
                },
            }
        )
    )
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
    status_url = f"http://127.0.0.1:{port}/v1/models/{MODEL}"
    sidecar = Sidecar(config)
    try:
        # Given a sidecar answering predictions, its log on the real broker
        await sidecar.start()

        async def up() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(status_url) as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for_async(up, 60, "the sidecar to answer")
        # When it is killed with SIGKILL in the middle of a steady flow
        answered = await answered_keys_until_killed(url, sidecar)
        killed_at = time.monotonic()
        # And started again on the same spool
        await sidecar.start()
        await wait_for_async(up, 60, "the restarted sidecar to answer")

        # Then the topic holds the record of every request answered before the kill (spooled),
        # or misses only ones answered in the moments before it (buffered)
        on_topic: set[str] = set()
        keys: list[str] = []

        async def delivered() -> bool:
            keys[:] = [
                r.key
                async for r in read_inference_log(
                    topic, local_env.kafka_bootstrap, InferenceLogQuery(from_beginning=True)
                )
            ]
            on_topic.update(keys)
            missing = set(answered) - on_topic
            late = [k for k in missing if killed_at - answered[k] > WRITTEN_WITHIN_SECONDS]
            return not late if durability == "buffered" else not missing

        await wait_for_async(delivered, 90, "the answered requests' records", interval=1.0)
    finally:
        await sidecar.stop()
    missing = set(answered) - on_topic
    twice = len(keys) - len(on_topic)
    with capsys.disabled():
        print(
            f"\nSIGKILL at {RATE} rps, durability {durability}: {len(answered)} answered 200 "
            f"before the kill, {len(missing)} of them not on the topic, {twice} records on it "
            f"twice (the bound: {MAX_IN_FLIGHT} in flight)"
            + (
                f" (answered at most {max(killed_at - answered[k] for k in missing) * 1000:.0f} "
                "ms before the kill)"
                if missing
                else ""
            )
        )
    assert twice <= MAX_IN_FLIGHT
    if durability == "spooled":
        assert missing == set()
