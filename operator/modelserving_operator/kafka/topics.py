"""The inference log's Kafka topics: made when missing, checked with a deadline, compared with
what each serving asks, and looked at again while servings use them.

Kafka being away never stops the rest of a serving: the outcome is a
LoggingState for the LoggingReady condition, and the caller retries later.

One admin client per set of brokers stays open, and the topics asked for at
about the same time go in one CreateTopics request: a thousand servings, or an
operator restart over them, cost a few requests, not a thousand connections
each fetching the metadata of every topic in the cluster. A topic that answers
TOPIC_ALREADY_EXISTS is described in one Metadata request for all of them in
the batch (those topics alone, never the broker's list), and its partitions and
replication factor are compared with what each serving asks: a serving whose
spec differs is told so (TopicMismatch, with the numbers), and only the serving
whose ask made the topic is told TopicCreated.

Every --topic-check-seconds the topics in use are described again, one Metadata
request per set of brokers (topic_checks): one deleted by hand is made again
with its serving's settings. The Metadata request never lets the broker create
what it asks of (allow_auto_topic_creation false). A broker with
auto.create.topics.enable makes a deleted topic with its own defaults as soon as
a sidecar produces to it; the operator cannot stop that, and what it finds then
is compared like any other topic.

A secured Kafka: the client speaks the serving's spec.logging.kafka.security, with the values
of its Secrets (read by the caller); one admin client per set of brokers and credentials, so a
changed Secret gets a new one. A broker that refuses the client's TLS or credentials is
diagnosed (KafkaTLSFailed, KafkaAuthenticationFailed) rather than reported as unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from modelserving.kafka_security.diagnosis import diagnose, problem_of
from modelserving.kafka_security.settings import KafkaSecurity
from modelserving_operator.status.conditions import LoggingState

log = logging.getLogger(__name__)

BATCH = 200  # topics per CreateTopics or Metadata request
# An admin client unused this long is closed: credentials rotated away leave none behind.
IDLE_SECONDS = 600.0
GATHER_SECONDS = 0.05  # how long the first request of a batch waits for others to join

# LoggingReady's reasons of the topic check.
TOPIC_READY = "TopicReady"
TOPIC_MISMATCH = "TopicMismatch"  # the topic exists with other settings than the spec asks
TOPIC_CREATION_FAILED = "TopicCreationFailed"  # tried again after --retry-seconds
KAFKA_UNREACHABLE = "KafkaUnreachable"


@dataclass(frozen=True)
class TopicSettings:
    """What a serving asks of its topic (spec.logging.kafka), or what a topic has."""

    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class KnownTopic:
    """A topic found: its settings, and the digest of the credentials that found it (which
    admin client describes it again)."""

    found: TopicSettings
    credentials: str = ""


@dataclass(frozen=True)
class TopicOutcome:
    """One serving's answer: LoggingReady's state, whether its ask made the topic now, and
    the topic's settings as they are (None unless it exists)."""

    state: LoggingState
    created: bool = False
    found: TopicSettings | None = None


def topic_state(topic: str, found: TopicSettings, asked: TopicSettings) -> LoggingState:
    """LoggingReady of a serving whose topic exists: ready, and TopicMismatch unless the topic
    has exactly the partitions and replication factor the spec asks. Records still go to it,
    as it is: the operator never changes a topic it finds, and a topic with more partitions
    than asked is told too (Kafka cannot take partitions away; the spec no longer says what
    the topic is)."""
    if found == asked:
        return LoggingState(True, TOPIC_READY, f"records go to the topic {topic}")
    return LoggingState(
        True,
        TOPIC_MISMATCH,
        (
            f"records go to the topic {topic}, which has {_settings_words(found)}; the spec asks "
            f"{_settings_words(asked)} (spec.logging.kafka.partitions, replicationFactor). The "
            "operator does not change an existing topic: change the topic or the spec"
        ),
    )


def _settings_words(settings: TopicSettings) -> str:
    plural = "s" if settings.partitions != 1 else ""
    return (
        f"{settings.partitions} partition{plural} and replication factor "
        f"{settings.replication_factor}"
    )


def described(topics: Iterable[Mapping[str, Any]]) -> dict[str, TopicSettings | int]:
    """A Metadata response's topics (its `to_object()`): each topic's settings, or its error
    code where it has no partitions to count (UNKNOWN_TOPIC_OR_PARTITION: it does not exist).
    The replication factor is the fewest replicas any partition has."""
    found: dict[str, TopicSettings | int] = {}
    for entry in topics:
        partitions = entry.get("partitions") or []
        if partitions:
            replicas = min(len(p.get("replicas") or ()) for p in partitions)
            found[entry["topic"]] = TopicSettings(len(partitions), replicas)
        else:
            found[entry["topic"]] = int(entry.get("error_code") or 0) or (
                UnknownTopicOrPartitionError.errno
            )
    return found


def error_words(code: int, message: str = "") -> str:
    """A Kafka error code as its name, with the broker's message if any."""
    name = for_code(code).__name__.removesuffix("Error")
    return f"{name} (error {code})" + (f": {message}" if message else "")


@dataclass
class _Ask:
    settings: TopicSettings
    answer: asyncio.Future[TopicOutcome]


Client = tuple[str, str]  # the brokers and a digest of the credentials: one admin client each


class TopicKeeper:
    """Makes sure topics exist, through one admin client per set of brokers and credentials;
    `close()` ends."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._admins: dict[Client, AIOKafkaAdminClient] = {}
        self._security: dict[Client, KafkaSecurity] = {}
        # Per client, per topic: what each serving waiting on it asks; the first ask is the
        # one CreateTopics sends (one topic is named once in a request).
        self._pending: dict[Client, dict[str, list[_Ask]]] = {}
        self._flushing: dict[Client, asyncio.Task[None]] = {}
        self._used: dict[Client, float] = {}  # when each admin client was last used
        # One start of a client at a time: a create and a check again (topic_checks) may both
        # find none, and the client started second would be left open.
        self._starting: dict[Client, asyncio.Lock] = {}

    async def ensure(
        self,
        bootstrap_servers: str,
        topic: str,
        partitions: int,
        replication_factor: int,
        security: KafkaSecurity | None = None,
        credentials: str = "",
    ) -> TopicOutcome:
        """Create `topic` unless it exists, and compare it with what is asked.
        `credentials` tells apart the security settings' values (a digest)."""
        client = (bootstrap_servers, credentials)
        self._security[client] = security or KafkaSecurity()
        ask = _Ask(
            TopicSettings(partitions, replication_factor),
            asyncio.get_running_loop().create_future(),
        )
        self._pending.setdefault(client, {}).setdefault(topic, []).append(ask)
        task = self._flushing.get(client)
        if task is None or task.done():
            self._flushing[client] = asyncio.create_task(self._flush(client))
        return await asyncio.shield(ask.answer)

    async def describe(
        self, bootstrap_servers: str, credentials: str, topics: Sequence[str]
    ) -> dict[str, TopicSettings | int] | None:
        """The topics' settings as the brokers have them now (an error code for one missing),
        in one Metadata request per BATCH topics; None if Kafka did not answer, or no serving
        has used these brokers and credentials for IDLE_SECONDS (ensure again)."""
        client = (bootstrap_servers, credentials)
        if client not in self._security:
            return None
        found: dict[str, TopicSettings | int] = {}
        try:
            async with asyncio.timeout(self._timeout):
                admin = await self._admin(client)
                for start in range(0, len(topics), BATCH):
                    found.update(await _metadata(admin, list(topics[start : start + BATCH])))
        except Exception as exc:  # the pods tell of Kafka away; the next round tries again
            log.warning(
                "describing %d topics at %s failed: %s",
                len(topics),
                bootstrap_servers,
                type(exc).__name__,
            )
            await self._drop(client)
            return None
        return found

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
                    state = LoggingState(
                        False, problem.reason, f"Kafka at {servers}: {problem.message}"
                    )
                    outcomes = {topic: [TopicOutcome(state)] * len(batch[topic]) for topic in batch}
                else:
                    outcomes = self._unreachable(batch, f"Kafka at {servers}: {exc!r}")
            for topic, asks in batch.items():
                for ask, outcome in zip(asks, outcomes[topic], strict=True):
                    if not ask.answer.done():
                        ask.answer.set_result(outcome)

    async def _close_idle(self, busy: Client) -> None:
        now = asyncio.get_running_loop().time()
        for client, used in list(self._used.items()):
            if client != busy and now - used > IDLE_SECONDS and not self._pending.get(client):
                del self._used[client]
                self._security.pop(client, None)
                self._starting.pop(client, None)
                await self._drop(client)

    async def _admin(self, client: Client) -> AIOKafkaAdminClient:
        self._used[client] = asyncio.get_running_loop().time()
        async with self._starting.setdefault(client, asyncio.Lock()):
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
        return admin

    async def _create(
        self, client: Client, batch: dict[str, list[_Ask]]
    ) -> dict[str, list[TopicOutcome]]:
        admin = await self._admin(client)
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=asks[0].settings.partitions,
                    replication_factor=asks[0].settings.replication_factor,
                )
                for topic, asks in batch.items()
            ]
        )
        errors = {topic: (code, message) for topic, code, message in _topic_errors(response)}
        existing = [t for t in batch if errors.get(t, (0, ""))[0] == TopicAlreadyExistsError.errno]
        found = await _metadata(admin, existing) if existing else {}
        outcomes: dict[str, list[TopicOutcome]] = {}
        for topic, asks in batch.items():
            code, message = errors.get(topic, (0, ""))
            if not code:  # made now, as the first ask has it
                outcomes[topic] = _compared(topic, asks[0].settings, asks, made=True)
            elif code != TopicAlreadyExistsError.errno:
                words = f"creating the topic {topic}: {error_words(code, message)}"
                failed = TopicOutcome(LoggingState(False, TOPIC_CREATION_FAILED, words))
                outcomes[topic] = [failed] * len(asks)
            elif isinstance(settings := found.get(topic), TopicSettings):
                outcomes[topic] = _compared(topic, settings, asks, made=False)
            else:  # exists, yet not described: deleted meanwhile, or still being made
                words = (
                    f"the topic {topic} exists but Kafka does not describe it: "
                    f"{error_words(settings or UnknownTopicOrPartitionError.errno)}"
                )
                failed = TopicOutcome(LoggingState(False, TOPIC_CREATION_FAILED, words))
                outcomes[topic] = [failed] * len(asks)
        return outcomes

    @staticmethod
    def _unreachable(batch: dict[str, list[_Ask]], message: str) -> dict[str, list[TopicOutcome]]:
        state = LoggingState(False, KAFKA_UNREACHABLE, message)
        return {topic: [TopicOutcome(state)] * len(asks) for topic, asks in batch.items()}

    async def _drop(self, client: Client) -> None:
        """A client that failed is closed: the next try connects afresh."""
        admin = self._admins.pop(client, None)
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()


def _compared(
    topic: str, found: TopicSettings, asks: list[_Ask], *, made: bool
) -> list[TopicOutcome]:
    """Each ask's outcome for a topic that has `found`: the first ask made it if `made`."""
    return [
        TopicOutcome(topic_state(topic, found, ask.settings), made and i == 0, found)
        for i, ask in enumerate(asks)
    ]


async def _metadata(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, TopicSettings | int]:
    # The admin client's describe_topics leaves allow_auto_topic_creation unset; a broker with
    # auto.create.topics.enable must not make a missing topic because the operator asked of it.
    request = MetadataRequest(topics, allow_auto_topic_creation=False)
    response = await admin._send_request(request)
    return described(response.to_object()["topics"])


def _topic_errors(response: Any) -> list[tuple[str, int, str]]:
    # CreateTopics responses carry (name, error_code[, error_message]) per topic.
    return [(t[0], t[1], t[2] or "" if len(t) > 2 else "") for t in response.topic_errors]
