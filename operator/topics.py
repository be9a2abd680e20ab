"""The inference log's Kafka topics: made when missing, checked with a deadline.

Kafka being away never stops the rest of a serving: the outcome is a
LoggingState for the LoggingReady condition, and the caller retries later.

One admin client per set of brokers stays open, and the topics asked for at
about the same time go in one CreateTopics request (an existing topic answers
TOPIC_ALREADY_EXISTS, so nothing lists the broker's topics): a thousand
servings, or an operator restart over them, cost a few requests, not a
thousand connections each fetching the metadata of every topic in the cluster.

A secured Kafka: the client speaks the serving's spec.logging.kafka.security, with the values
of its Secrets (read by the caller); one admin client per set of brokers and credentials, so a
changed Secret gets a new one. A broker that refuses the client's TLS or credentials is
diagnosed (KafkaTLSFailed, KafkaAuthenticationFailed) rather than reported as unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from modelserving.kafka_security import KafkaSecurity, diagnose, problem_of
from modelserving.operator.status import LoggingState

log = logging.getLogger(__name__)

BATCH = 200  # topics per CreateTopics request
# An admin client unused this long is closed: credentials rotated away leave none behind.
IDLE_SECONDS = 600.0
GATHER_SECONDS = 0.05  # how long the first request of a batch waits for others to join


def _future() -> asyncio.Future[tuple[LoggingState, bool]]:
    return asyncio.get_running_loop().create_future()


@dataclass
class _Pending:
    partitions: int
    replication_factor: int
    answer: asyncio.Future[tuple[LoggingState, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Client = tuple[str, str]  # the brokers and a digest of the credentials: one admin client each


class TopicKeeper:
    """Makes sure topics exist, through one admin client per set of brokers and credentials;
    `close()` ends."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._admins: dict[Client, AIOKafkaAdminClient] = {}
        self._security: dict[Client, KafkaSecurity] = {}
        self._pending: dict[Client, dict[str, _Pending]] = {}
        self._flushing: dict[Client, asyncio.Task[None]] = {}
        self._used: dict[Client, float] = {}  # when each admin client was last used

    async def ensure(
        self,
        bootstrap_servers: str,
        topic: str,
        partitions: int,
        replication_factor: int,
        security: KafkaSecurity | None = None,
        credentials: str = "",
    ) -> tuple[LoggingState, bool]:
        """Create `topic` unless it exists; returns the state and whether it was created now.
        `credentials` tells apart the security settings' values (a digest)."""
        client = (bootstrap_servers, credentials)
        self._security[client] = security or KafkaSecurity()
        pending = self._pending.setdefault(client, {})
        if topic not in pending:
            pending[topic] = _Pending(partitions, replication_factor)
        answer = pending[topic].answer
        task = self._flushing.get(client)
        if task is None or task.done():
            self._flushing[client] = asyncio.create_task(self._flush(client))
        return await asyncio.shield(answer)

    async def close(self) -> None:
        for task in self._flushing.values():
            task.cancel()
        for admin in self._admins.values():
            with contextlib.suppress(Exception):
                await admin.close()
        self._admins.clear()

    async def _flush(self, client: Client) -> None:
        await asyncio.sleep(GATHER_SECONDS)
        await self._close_idle(client)
        servers = client[0]
        while self._pending.get(client):
            batch = dict(list(self._pending[client].items())[:BATCH])
            for topic in batch:
                del self._pending[client][topic]
            try:
                async with asyncio.timeout(self._timeout):
                    outcomes = await self._create(client, batch)
            except TimeoutError:
                outcomes = self._unreachable(
                    batch, f"Kafka at {servers} did not answer within {self._timeout:g} s"
                )
                await self._drop(client)
            except Exception as exc:  # KafkaError, OSError or another: the caller retries later
                await self._drop(client)
                problem = problem_of(exc) or await diagnose(
                    servers, self._security[client], timeout=min(self._timeout, 5.0)
                )
                if problem is not None:
                    state = LoggingState(False, problem.reason, f"Kafka at {servers}: "
                                         f"{problem.message}")  # fmt: skip
                    outcomes = {topic: (state, False) for topic in batch}
                else:
                    outcomes = self._unreachable(batch, f"Kafka at {servers}: {exc!r}")
            for topic, outcome in outcomes.items():
                if not batch[topic].answer.done():
                    batch[topic].answer.set_result(outcome)

    async def _close_idle(self, busy: Client) -> None:
        now = asyncio.get_running_loop().time()
        for client, used in list(self._used.items()):
            if client != busy and now - used > IDLE_SECONDS and not self._pending.get(client):
                del self._used[client]
                self._security.pop(client, None)
                await self._drop(client)

    async def _create(
        self, client: Client, batch: dict[str, _Pending]
    ) -> dict[str, tuple[LoggingState, bool]]:
        self._used[client] = asyncio.get_running_loop().time()
        admin = self._admins.get(client)
        if admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=client[0],
                request_timeout_ms=5000,
                **self._security[client].client_options(),
            )
            try:
                await admin.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await admin.close()
                raise
            self._admins[client] = admin
        response = await admin.create_topics(
            [
                NewTopic(
                    topic, num_partitions=p.partitions, replication_factor=p.replication_factor
                )
                for topic, p in batch.items()
            ]
        )
        ready = {t: (_topic_ready(t), True) for t in batch}
        for topic, code, message in _topic_errors(response):
            if topic not in ready or not code:
                continue
            if code == TopicAlreadyExistsError.errno:
                ready[topic] = (_topic_ready(topic), False)
            else:
                failed = LoggingState(
                    False, "TopicCreationFailed", f"creating {topic}: error {code} {message}"
                )
                ready[topic] = (failed, False)
        return ready

    @staticmethod
    def _unreachable(
        batch: dict[str, _Pending], message: str
    ) -> dict[str, tuple[LoggingState, bool]]:
        return {topic: (LoggingState(False, "KafkaUnreachable", message), False) for topic in batch}

    async def _drop(self, client: Client) -> None:
        """A client that failed is closed: the next try connects afresh."""
        admin = self._admins.pop(client, None)
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


def _topic_ready(topic: str) -> LoggingState:
    return LoggingState(True, "TopicReady", f"records go to the topic {topic}")


def _topic_errors(response: Any) -> list[tuple[str, int, str]]:
    # CreateTopics responses carry (name, error_code[, error_message]) per topic.
    return [(t[0], t[1], t[2] if len(t) > 2 else "") for t in response.topic_errors]
