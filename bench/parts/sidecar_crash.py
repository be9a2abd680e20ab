"""What a SIGKILL of our sidecar costs its inference log, for each durability: the sidecar (API-key
auth, log on into the real broker) answers predictions at a steady 1,000 rps, is killed with
SIGKILL in the middle of the flow, and is started again on the same config and spool, as a
restarted container would be. Then the topic is read whole.

- lost: requests answered 200 before the kill whose record never reached the topic (the
  `spooled` durability, the default, promises none, and is run with the defaults, the
  durability left unsaid; `buffered` may lose the records still waiting for the next spool
  write);
- re-sent: records on the topic more than once (the restart sends again what Kafka had not yet
  acknowledged at the kill).

The load is a Python client on the load core (vegeta cannot tell which request ids it got
answered), so the rate is the one asked for as long as that core keeps up; the figures give the
rate reached.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from typing import Any

import aiohttp

from bench.harness import load
from bench.harness.procs import BenchError, Proc, free_port, log
from bench.harness.topics import create_topic, topic_keys
from bench.parts.request_path import upstream
from bench.parts.sidecar import SidecarBench
from modelserving_sidecar.config import LoggingConfig

RATE = 1000  # requests per second while the sidecar is killed
KILL_AFTER_SECONDS = 3.0
SETTLED_SECONDS = 4.0  # the topic is read once it has not grown for this long after the restart
SETTLE_TIMEOUT_SECONDS = 90.0
DURABILITIES = ("buffered", "spooled")


async def _answered_until(
    url: str, headers: dict[str, str], body: str, stop: threading.Event, answered: dict[str, float]
) -> int:
    """Predictions at RATE until `stop` is set; the request ids answered 200 (with when) go in
    `answered`. Returns how many requests were sent."""
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one() -> None:
            try:
                async with http.post(url, data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        answered[resp.headers["X-Request-Id"]] = time.monotonic()
            except aiohttp.ClientError:
                pass  # the sidecar died under it: not answered

        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        while not stop.is_set():
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(max(0.0, started + len(tasks) / RATE - time.monotonic()))
        await asyncio.gather(*tasks)
        return len(tasks)


def sigkill(side: SidecarBench, durability: str) -> dict[str, Any]:
    """One kill of the sidecar with this durability."""
    bench = side.bench
    bootstrap = side.bootstrap
    if not bootstrap:
        raise BenchError("no Kafka broker")
    with upstream(bench):
        port = free_port()
        topic = f"bench-crash-{uuid.uuid4().hex[:10]}"
        create_topic(bootstrap, topic)
        spool = bench.workdir / f"spool-crash-{port}"
        # The default durability is taken with the defaults: the config says nothing of it.
        said = {} if durability == LoggingConfig().durability else {"durability": durability}
        config = side.render_config(port, "apiKey", topic, spool, **said)
        target = load.Target(port, headers=side.headers("apiKey"))

        def start() -> Proc:
            return side.process(config, port, f"sidecar-crash-{durability}")

        proc = start()
        answered: dict[str, float] = {}
        stop = threading.Event()
        outcome: list[int | BaseException] = []  # requests sent, or what ended the load

        def load_until_stopped() -> None:
            try:
                outcome.append(
                    asyncio.run(
                        _answered_until(
                            target.url, target.all_headers(), target.body, stop, answered
                        )
                    )
                )
            except BaseException as exc:  # reported by the bench's thread below
                outcome.append(exc)

        loader = threading.Thread(target=load_until_stopped)
        began = time.monotonic()
        loader.start()
        time.sleep(KILL_AFTER_SECONDS)
        proc.stop(sig=signal.SIGKILL)
        killed_at = time.monotonic()
        stop.set()
        loader.join()
        if not outcome or isinstance(outcome[0], BaseException):
            raise BenchError(f"the load failed: {outcome[0] if outcome else 'no outcome'!r}")
        sent = outcome[0]
        answered_before_kill = {k: t for k, t in answered.items() if t <= killed_at}
        proc = start()
        try:
            keys = _settled_keys(bootstrap, topic)
        finally:
            proc.stop(timeout=30)
    if not answered_before_kill:
        raise BenchError("no request was answered before the kill")
    on_topic = {k.decode() for k in keys if k is not None}
    lost = [k for k in answered_before_kill if k not in on_topic]
    return {
        "durability": durability,
        "rate_asked": RATE,
        "rate_reached": round(sent / (killed_at - began)),
        "answered_before_kill": len(answered_before_kill),
        "records_lost": len(lost),
        "lost_answered_within_ms_of_kill": (
            round(max(killed_at - answered_before_kill[k] for k in lost) * 1000) if lost else 0
        ),
        "records_resent": len(keys) - len(set(keys)),
        # The bound on re-sent records: what may be sent and not yet acknowledged at once.
        "max_in_flight_records": LoggingConfig.max_in_flight_records,
    }


def _settled_keys(bootstrap: str, topic: str) -> list[bytes | None]:
    """The topic's keys once the restarted sidecar has sent what its spool held."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    keys = topic_keys(bootstrap, topic)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = topic_keys(bootstrap, topic)
        if len(now) != len(keys):
            keys, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= SETTLED_SECONDS:
            break
    return keys


def run(side: SidecarBench) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for durability in DURABILITIES:
        log(f"crash: SIGKILL of our sidecar at {RATE} rps, durability {durability}")
        try:
            out[durability] = sigkill(side, durability)
        except BenchError as exc:
            out[durability] = {"error": str(exc)[-2000:]}
    return out
