"""The benchmark's Kafka topics on the local broker: created for a measurement, counted (records
and distinct keys), and deleted at the end."""

from __future__ import annotations

import asyncio
import time

from bench.harness.procs import log

CREATED_TOPICS: list[tuple[str, str]] = []  # (bootstrap, topic), deleted at the end


def create_topic(bootstrap: str, topic: str) -> None:
    CREATED_TOPICS.append((bootstrap, topic))

    async def create() -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete those of `names` that exist, 200 to a request (an operator run at scale leaves
    thousands)."""

    async def drop() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            present = set(await admin.list_topics())
            doomed = [n for n in names if n in present]
            for start in range(0, len(doomed), 200):
                await admin.delete_topics(doomed[start : start + 200])
        finally:
            await admin.close()

    asyncio.run(drop())


def delete_created_topics() -> None:
    """The benchmark's topics go when it ends: their records were only ever counted."""
    by_bootstrap: dict[str, list[str]] = {}
    for bootstrap, topic in CREATED_TOPICS:
        by_bootstrap.setdefault(bootstrap, []).append(topic)
    for bootstrap, topics in by_bootstrap.items():
        try:
            delete_topics(bootstrap, topics)
        except Exception as exc:  # leftovers are harmless: say so and go on
            log(f"could not delete the benchmark's topics {topics}: {exc!r}")
    CREATED_TOPICS.clear()


Header = tuple[str, bytes]  # a Kafka record header: (name, value)


def topic_records(bootstrap: str, topic: str, header: Header | None = None) -> tuple[int, int]:
    """(records on the topic, distinct keys among them), only those with `header` if given: a
    replay after an outage may send a record twice, which is a duplicate, not a record more."""
    keys = topic_keys(bootstrap, topic, header)
    return len(keys), len(set(keys))


def topic_keys(bootstrap: str, topic: str, header: Header | None = None) -> list[bytes | None]:
    """The key of every record on the topic (with `header` if given), in offset order per
    partition."""

    async def read() -> list[bytes | None]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=50 * 1024 * 1024,
        )
        await consumer.start()
        try:
            await consumer.topics()
            found = consumer.partitions_for_topic(topic) or {0}
            parts = [TopicPartition(topic, p) for p in found]
            total = sum((await consumer.end_offsets(parts)).values())
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            keys: list[bytes | None] = []
            read = 0
            while read < total:
                batch = await consumer.getmany(timeout_ms=2000, max_records=20000)
                if not batch:
                    break
                for records in batch.values():
                    read += len(records)
                    keys += [r.key for r in records if header is None or header in r.headers]
            return keys
        finally:
            await consumer.stop()

    return asyncio.run(read())


def wait_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 90, header: Header | None = None
) -> tuple[int, int]:
    """Poll the topic until it holds `expected` distinct records (with `header` if given) or
    stops growing."""
    deadline, last, still = time.monotonic() + timeout, (-1, -1), 0
    while time.monotonic() < deadline:
        now = topic_records(bootstrap, topic, header)
        if now[1] >= expected:
            return now
        still = still + 1 if now == last else 0
        if still >= 5:
            return now
        last = now
        time.sleep(2)
    return last
