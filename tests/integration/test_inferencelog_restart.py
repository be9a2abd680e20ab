"""The inference log across process deaths: a process killed with SIGKILL in a broker outage
loses nothing (the next one replays the spool), one killed under load sends again at most what
was in flight, and SIGTERM delivers what was queued.

The process under test is tests/support/inference_log_driver.py: it opens the real pipeline,
submits exchanges, says how far it got on stdout, and waits for a signal.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import inference_log_driver
from tests.support.process_output import ProcessOutput
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

DRIVER = Path(inference_log_driver.__file__)


@dataclass
class Driver:
    """A running driver process and its stdout."""

    proc: subprocess.Popen
    output: ProcessOutput

    def wait_line(self, prefix: str, timeout: float) -> str:
        return self.output.wait_line(prefix, timeout)


def start_driver(
    topic: str,
    bootstrap: str,
    spool: Path,
    first: int,
    count: int,
    rate: float,
    max_in_flight: int = 0,
) -> Driver:
    args = ["--topic", topic, "--bootstrap", bootstrap, "--spool", str(spool)]
    args += ["--first", str(first), "--count", str(count), "--rate", str(rate)]
    args += ["--max-in-flight", str(max_in_flight)]
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return Driver(proc, ProcessOutput(proc.stdout, "the driver"))


def delivered_keys(topic: str, bootstrap: str) -> list[str]:
    from modelserving.inferencelog.query import InferenceLogQuery
    from modelserving.inferencelog.reader import read_inference_log

    async def read() -> list[str]:
        return [
            r.key
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]

    return asyncio.run(read())


def wait_delivered(topic: str, bootstrap: str, expected: set[str], timeout: float) -> list[str]:
    keys: list[str] = []

    def all_there() -> bool:
        keys[:] = delivered_keys(topic, bootstrap)
        return expected <= set(keys)

    wait_for(all_there, timeout, f"{len(expected)} records on {topic}", interval=0.5)
    return keys


def test_sigkill_in_an_outage_then_restart_replays_the_spool(
    local_env, topic, tmp_path, kafka_broker
):
    bootstrap = kafka_broker.bootstrap
    n = 600
    first = start_driver(topic, bootstrap, tmp_path, first=0, count=n, rate=200)
    try:
        first.wait_line("SUBMITTED 100", 30)
        kafka_broker.stop()
        first.wait_line("DONE", 30)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.proc.kill()
        kafka_broker.start()
    assert list(tmp_path.glob("*.seg")), "the killed process left no spool"
    second = start_driver(topic, bootstrap, tmp_path, first=n, count=0, rate=0)
    try:
        second.wait_line("DONE", 30)
        keys = wait_delivered(topic, bootstrap, {f"req-{i:06d}" for i in range(n)}, timeout=120)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0
    finally:
        second.proc.kill()
    delivered = len(set(keys))
    print(
        f"\nSIGKILL mid-outage: sent {n}, delivered {delivered}, "
        f"duplicated {len(keys) - delivered}, lost {n - delivered}"
    )
    assert delivered == n


# Small, so that the bound says something at 1,000 requests/s (the default is 10,000).
MAX_IN_FLIGHT = 100


def test_sigkill_under_load_sends_again_at_most_what_was_in_flight(local_env, topic, tmp_path):
    """Killed with SIGKILL at about 1,000 requests/s with the broker up, then restarted on the
    same spool: the records Kafka gets twice are at most those that were in flight (sent and not
    acknowledged) at the kill, which the sender keeps to maxInFlightRecords."""
    bootstrap = local_env.kafka_bootstrap
    n = 3000
    first = start_driver(topic, bootstrap, tmp_path, 0, n, rate=1000, max_in_flight=MAX_IN_FLIGHT)
    try:
        first.wait_line("SUBMITTED 1500", 30)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.proc.kill()
    second = start_driver(topic, bootstrap, tmp_path, n, 0, rate=0, max_in_flight=MAX_IN_FLIGHT)
    try:
        sent_again = int(second.wait_line("RECOVERED", 30).split()[1])
        second.wait_line("DRAINED", 60)
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0
    finally:
        second.proc.kill()
    keys = delivered_keys(topic, bootstrap)
    delivered = set(keys)
    twice = len(keys) - len(delivered)
    print(
        f"\nSIGKILL under load: sent twice: {twice} of {len(delivered)} "
        f"(the bound: {MAX_IN_FLIGHT} in flight); the restart sent again {sent_again}"
    )
    assert twice <= MAX_IN_FLIGHT


def test_sigterm_delivers_what_was_queued(local_env, topic, tmp_path):
    bootstrap = local_env.kafka_bootstrap
    n = 3000
    driver = start_driver(topic, bootstrap, tmp_path, first=0, count=n, rate=0)
    try:
        driver.wait_line("DONE", 60)
        driver.proc.send_signal(signal.SIGTERM)
        driver.wait_line("CLOSED", 30)
        assert driver.proc.wait(10) == 0
    finally:
        driver.proc.kill()
    # Delivered before the process ended: no second process replays anything here.
    keys = delivered_keys(topic, bootstrap)
    assert set(keys) == {f"req-{i:06d}" for i in range(n)}
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["acked"] == n
