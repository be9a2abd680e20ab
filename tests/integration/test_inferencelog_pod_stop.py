"""What the inference log keeps when a serving's pod stops (a roll, a scale-down, a drained
node) while Kafka is down: the real sidecar process answers predictions with the real broker
stopped, gets its SIGTERM, and drains for `logging.drainTimeoutSeconds` (the serving's
spec.logging.drainTimeoutSeconds).

- Kafka back within the drain: every answered request's record is on the topic before the
  process exits, and nothing is left in the spool (an emptyDir spool may go with the pod).
- Kafka back only after it: the process exits at the bound, its records counted as left in the
  spool; a spool that outlives the pod (spec.logging.spool.claimName, the Deployment then rolls
  by Recreate) is the next sidecar's, which delivers them.
- Meanwhile a second sidecar on the same spool (two pods on one claim) is refused, naming the
  one that holds it, and the spool is not touched.

And the API server takes a drain of 1 to 3600 s and refuses a claimed spool for several pods.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from modelserving import api
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving_sidecar.log.spool.segments import SEGMENT_SUFFIX
from tests.support.ports import free_port
from tests.support.servings import get_serving, serving_manifest
from tests.support.sidecar_configs import sidecar_config
from tests.support.waiting import wait_for_async

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

MODEL = "half_plus_two"
BODY = b'{"instances": [1.0, 2.0, 5.0]}'
ANSWERED = 50  # predictions answered while Kafka is down


def write_sidecar_config(
    path: Path, upstream: str, topic: str, bootstrap: str, spool: Path, drain: float
) -> int:
    """The sidecar's config file as the operator renders it (the drain included); its port."""
    port = free_port()
    config = sidecar_config(
        upstream,
        model={"name": MODEL},
        listen={"host": "127.0.0.1", "port": port},
        logging={
            "mode": "ALL",
            "topic": topic,
            "bootstrapServers": bootstrap,
            "spoolDir": str(spool),
            "drainTimeoutSeconds": drain,
            "producerStallSeconds": 3,
            "sendTimeoutSeconds": 5,
        },
    )
    path.write_text(yaml.safe_dump(config))
    return port


async def start_sidecar(config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config),
            "--log-level",
            "INFO",
            stderr=stderr,
        )


async def answering(port: int, process: asyncio.subprocess.Process) -> None:
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL}"

    async def up() -> bool:
        assert process.returncode is None, "the sidecar exited"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for_async(up, 60, "the sidecar to answer")


async def predict(port: int, count: int) -> list[str]:
    """`count` predictions, each answered 200; their request ids."""
    keys = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
            async with http.post(url, data=BODY) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
                keys.append(resp.headers["X-Request-Id"])
    return keys


async def on_topic(topic: str, bootstrap: str) -> list[str]:
    return [
        r.key
        async for r in read_inference_log(topic, bootstrap, InferenceLogQuery(from_beginning=True))
    ]


async def wait_on_topic(topic: str, bootstrap: str, keys: set[str], timeout: float) -> list[str]:
    found: list[str] = []

    async def there() -> bool:
        found[:] = await on_topic(topic, bootstrap)
        return keys <= set(found)

    await wait_for_async(there, timeout, f"{len(keys)} records on {topic}", interval=1.0)
    return found


def left_in_spool(log: Path) -> int:
    """What the sidecar's log says it left in the spool at exit (0: nothing)."""
    found = re.findall(r"(\d+) records stay in the spool", log.read_text())
    return int(found[-1]) if found else 0


def unacknowledged(spool: Path) -> int:
    """Records in the spool's segments past its acknowledged position."""
    from modelserving_sidecar.log.spool.segments import Spool

    opened = Spool(spool, max_bytes=10**9, segment_bytes=10**6, fsync_interval=1.0)
    opened.open()
    try:
        return opened.recovered_ids
    finally:
        opened.close()


async def given_a_sidecar_answering_while_kafka_is_down(
    tmp_path: Path, upstream: str, topic: str, bootstrap: str, kafka_broker, drain: float
) -> tuple[asyncio.subprocess.Process, list[str], Path, Path]:
    spool, log = tmp_path / "spool", tmp_path / "first.log"
    config = tmp_path / "first.yaml"
    port = write_sidecar_config(config, upstream, topic, bootstrap, spool, drain)
    process = await start_sidecar(config, log)
    try:
        await answering(port, process)
        # One record on the topic first: the topic is there and the producer has met the broker.
        first = await predict(port, 1)
        await wait_on_topic(topic, bootstrap, set(first), 60)
        await asyncio.to_thread(kafka_broker.stop)
        keys = first + await predict(port, ANSWERED)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, keys, spool, log


async def test_kafka_back_within_the_drain_gets_every_answered_record_before_the_pod_goes(
    local_env, topic, upstream, kafka_broker, tmp_path, capsys
):
    bootstrap = kafka_broker.bootstrap
    drain = 150.0  # the broker's own start takes up to a minute here
    process, keys, spool, log = await given_a_sidecar_answering_while_kafka_is_down(
        tmp_path, upstream, topic, bootstrap, kafka_broker, drain
    )
    second: asyncio.subprocess.Process | None = None
    try:
        # When the pod is told to stop, Kafka still down
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        # A second sidecar on the same spool meanwhile (two pods on one claim) is refused
        second_log = tmp_path / "second.log"
        second_config = tmp_path / "second.yaml"
        write_sidecar_config(second_config, upstream, topic, bootstrap, spool, drain)
        second = await start_sidecar(second_config, second_log)
        assert await asyncio.wait_for(second.wait(), 60) != 0
        assert f"is in use by pid {process.pid} on " in second_log.read_text()
        assert process.returncode is None, "the first sidecar did not wait for Kafka"
        # And Kafka comes back within the drain
        await asyncio.to_thread(kafka_broker.start)
        back = time.monotonic() - stopped
        assert await asyncio.wait_for(process.wait(), drain) == 0
        exited = time.monotonic() - stopped
    finally:
        for started in (process, second):
            if started is not None and started.returncode is None:
                started.kill()
                await started.wait()
        await asyncio.to_thread(kafka_broker.start)
    # Then every answered request's record is on the topic and none is left in the spool
    found = await wait_on_topic(topic, bootstrap, set(keys), 30)
    assert left_in_spool(log) == 0
    assert unacknowledged(spool) == 0
    with capsys.disabled():
        print(
            f"\nKafka back {back:.0f} s into a {drain:.0f} s drain: {len(keys)} answered, "
            f"{len(set(keys) & set(found))} on the topic when the sidecar exited after "
            f"{exited:.0f} s, 0 left in the spool"
        )


async def test_kafka_back_after_the_drain_leaves_the_records_in_the_spool_for_the_next_pod(
    local_env, topic, upstream, kafka_broker, tmp_path, capsys
):
    bootstrap = kafka_broker.bootstrap
    drain = 3.0
    process, keys, spool, log = await given_a_sidecar_answering_while_kafka_is_down(
        tmp_path, upstream, topic, bootstrap, kafka_broker, drain
    )
    try:
        # When the pod is told to stop and Kafka stays down past the drain
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert await asyncio.wait_for(process.wait(), 60) == 0
        exited = time.monotonic() - stopped
        # Then it exits at the bound (and the shutdown's other phases), the records counted
        # as left in the spool
        assert exited < drain + 25, exited
        left = left_in_spool(log)
        assert left == ANSWERED, log.read_text()[-3000:]
        assert list(spool.glob(f"*{SEGMENT_SUFFIX}"))
        # And a new sidecar on the same spool (the next pod on the claim) delivers them
        await asyncio.to_thread(kafka_broker.start)
        next_config = tmp_path / "next.yaml"
        port = write_sidecar_config(next_config, upstream, topic, bootstrap, spool, drain)
        process = await start_sidecar(next_config, tmp_path / "next.log")
        await answering(port, process)
        found = await wait_on_topic(topic, bootstrap, set(keys), 120)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        await asyncio.to_thread(kafka_broker.start)
    assert set(keys) <= set(found)
    with capsys.disabled():
        print(
            f"\nKafka down past a {drain:.0f} s drain: {len(keys)} answered, the sidecar exited "
            f"after {exited:.1f} s leaving {left} in the spool; the next sidecar on the "
            f"spool delivered them: {len(set(keys) & set(found))} on the topic"
        )


CLAIMED = {"spool": {"claimName": "spool"}}
ONE_POD_ONLY = "spec.logging.spool.claimName holds the spool of one pod"


def test_the_api_server_refuses_a_drain_out_of_bounds_and_a_claimed_spool_for_several_pods(
    crds, namespace
):
    refusals = {
        "replicas": (dict(logging=CLAIMED, server={"replicas": 2}), ONE_POD_ONLY),
        "autoscaled": (dict(logging=CLAIMED, autoscaling={"enabled": True}), ONE_POD_ONLY),
        "no-drain": (dict(logging={"drainTimeoutSeconds": 0}), "drainTimeoutSeconds"),
        "long-drain": (dict(logging={"drainTimeoutSeconds": 3601}), "drainTimeoutSeconds"),
    }
    for name, (spec, message) in refusals.items():
        with pytest.raises(ApiException) as refused:
            crds.create_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name, **spec)
            )
        assert refused.value.status == 422, name
        assert message in " ".join(refused.value.body.split()), refused.value.body

    # What can work is taken, and a serving that says no drain gets the default
    taken = {
        "claimed": dict(logging={**CLAIMED, "drainTimeoutSeconds": 3600}),
        "plain": dict(server={"replicas": 3}),
    }
    for name, spec in taken.items():
        crds.create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name, **spec)
        )
    assert get_serving(crds, namespace, "claimed")["spec"]["logging"]["drainTimeoutSeconds"] == 3600
    assert get_serving(crds, namespace, "plain")["spec"]["logging"]["drainTimeoutSeconds"] == 20
