"""The inference log's Kafka topic: made when missing, checked with a deadline.

Kafka being away never stops the rest of a serving: the outcome is a
LoggingState for the LoggingReady condition, and the caller retries later.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from modelserving.operator.status import LoggingState

log = logging.getLogger(__name__)


async def ensure_topic(
    bootstrap_servers: str, topic: str, partitions: int, replication_factor: int, timeout: float
) -> tuple[LoggingState, bool]:
    """Create `topic` unless it exists; returns the state and whether it was created now."""
    try:
        async with asyncio.timeout(timeout):
            return await _ensure_topic(bootstrap_servers, topic, partitions, replication_factor)
    except TimeoutError:
        message = f"Kafka at {bootstrap_servers} did not answer within {timeout:g} s"
    except (KafkaError, OSError) as exc:
        message = f"Kafka at {bootstrap_servers}: {exc!r}"
    return LoggingState(False, "KafkaUnreachable", message), False


async def _ensure_topic(
    bootstrap_servers: str, topic: str, partitions: int, replication_factor: int
) -> tuple[LoggingState, bool]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            return LoggingState(True, "TopicReady", f"records go to the topic {topic}"), False
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)]
        )
        created = True
        for _, code, message in _topic_errors(response):
            if code == TopicAlreadyExistsError.errno:
                created = False
            elif code:
                return LoggingState(
                    False, "TopicCreationFailed", f"creating {topic}: error {code} {message}"
                ), False
        return LoggingState(True, "TopicReady", f"records go to the topic {topic}"), created
    finally:
        await admin.close()


def _topic_errors(response) -> list[tuple[str, int, str]]:
    # CreateTopics responses carry (name, error_code[, error_message]) per topic.
    return [(t[0], t[1], t[2] if len(t) > 2 else "") for t in response.topic_errors]
