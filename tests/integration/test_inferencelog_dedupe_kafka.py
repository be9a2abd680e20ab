"""`modelserving logs --dedupe` against the real broker: records a crash sent twice are printed
once and the copies dropped are counted on stderr, a shadow's record under a request id already
seen is printed, and without `--dedupe` every copy is printed."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import Counter

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import (
    HEADER_CALLER,
    HEADER_MODEL_VERSION,
    HEADER_POD,
    HEADER_REQUEST_ID,
    InferenceLogRecord,
    encode_record,
)
from tests.support.waiting import wait_for_async

PARTITIONS = 3
# What the planned shadow versions would add to their records (a header saying so).
HEADER_ROLE = "role"

KafkaRecord = tuple[bytes, list[tuple[str, bytes]], bytes]


def logged(i: int, version: int = 3, role: str | None = None) -> KafkaRecord:
    """Record `i` as the sidecar puts it on the topic: key, headers, Avro value."""
    request_id = f"req-{i:04d}"
    headers = [
        (HEADER_REQUEST_ID, request_id.encode()),
        (HEADER_CALLER, b"team-a"),
        (HEADER_MODEL_VERSION, str(version).encode()),
        (HEADER_POD, b"mnist-7d9f-abcde"),
    ]
    if role is not None:
        headers.append((HEADER_ROLE, role.encode()))
    record = InferenceLogRecord(
        model_id=17,
        model_name="mnist",
        model_version=version,
        request_timestamp=1_700_000_000_000 + i,
        response_http_code=200,
        inference_request=json.dumps({"instances": [[i]]}),
        inference_response=json.dumps({"predictions": [[i / version]]}),
    )
    return request_id.encode(), headers, encode_record(record)


async def produce(topic: str, bootstrap: str, records: list[KafkaRecord]) -> None:
    """Produce as the sidecar does: keyed, so that a re-sent record lands in the partition of
    its first copy (aiokafka partitions by key as Kafka's Java client does)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, headers, value in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()

    # A new topic's partitions settle on their leader for a moment after the first sends:
    # wait until a reader sees them all, so that the command reads what a user's would.
    async def all_readable() -> bool:
        seen = [
            r
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len(seen) == len(records)

    await wait_for_async(all_readable, 30, f"{len(records)} records readable on {topic}")


async def modelserving_logs(topic: str, bootstrap: str, *flags: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "modelserving.cli", "logs", topic, "--bootstrap-servers"]
    out = await asyncio.to_thread(
        subprocess.run,
        [*argv, bootstrap, "--from-beginning", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


def printed(out: subprocess.CompletedProcess) -> Counter[tuple[str, int, str | None]]:
    """How many times each record was printed: (request id, model version, role)."""
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    return Counter((ln["key"], ln["modelVersion"], ln["headers"].get(HEADER_ROLE)) for ln in lines)


def dropped(out: subprocess.CompletedProcess) -> int:
    """The count `--dedupe` says on stderr."""
    found = re.search(r"--dedupe: (\d+) duplicate records? dropped", out.stderr)
    assert found, out.stderr
    return int(found[1])


async def test_dedupe_prints_each_record_once_after_a_crash_resent_some(local_env, topic):
    bootstrap = local_env.kafka_bootstrap
    # Given twelve records on the topic, then a crash that re-sends the last five byte for
    # byte, and a shadow version's answer to request 3 (same request id, its own record)
    first = [logged(i) for i in range(12)]
    resent = first[7:]
    shadow = logged(3, version=4, role="shadow")
    await produce(topic, bootstrap, [*first, *resent, shadow])
    once = {(f"req-{i:04d}", 3, None): 1 for i in range(12)} | {("req-0003", 4, "shadow"): 1}

    # When a data team reads the log with --dedupe
    deduped = await modelserving_logs(topic, bootstrap, "--dedupe")

    # Then each record is printed once, the shadow's included, and stderr says 5 were dropped
    assert printed(deduped) == once
    assert dropped(deduped) == 5

    # And without --dedupe the five copies are printed as well, with nothing said on stderr
    everything = await modelserving_logs(topic, bootstrap)
    assert printed(everything) == once | {(f"req-{i:04d}", 3, None): 2 for i in range(7, 12)}
    assert "duplicate" not in everything.stderr


async def test_dedupe_with_a_window_too_small_keeps_the_older_copies(local_env, topic):
    """A window remembers only the N records seen most recently: a copy re-sent after more
    records than that is printed again (a partition's records come in order)."""
    bootstrap = local_env.kafka_bootstrap
    records = [logged(i) for i in range(6)]
    await produce(topic, bootstrap, [*records, *records])

    small = await modelserving_logs(topic, bootstrap, "--dedupe", "1")
    large = await modelserving_logs(topic, bootstrap, "--dedupe=6")

    small_dropped = dropped(small)
    assert sum(printed(small).values()) == 12 - small_dropped > 6
    assert printed(large) == {(f"req-{i:04d}", 3, None): 1 for i in range(6)}
    assert dropped(large) == 6
    assert "(window size 6)" in large.stderr
