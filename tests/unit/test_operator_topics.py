"""The topic check's pure parts and its bookkeeping, with a stand-in for Kafka's admin answers:
a topic that exists is compared with what each serving asks, only the serving whose ask made it
hears TopicCreated, a refused create says why, and a topic gone or changed marks its servings."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from modelserving_operator import reconcile
from modelserving_operator.kafka import topics
from modelserving_operator.kafka.topic_checks import check_topics
from modelserving_operator.kafka.topics import (
    KnownTopic,
    TopicKeeper,
    TopicSettings,
    described,
    error_words,
    topic_state,
)
from modelserving_operator.runtime.workqueue import WorkQueue
from modelserving_operator.settings import OperatorSettings

SIX = TopicSettings(6, 1)
THREE = TopicSettings(3, 1)


def test_a_topic_as_asked_is_ready():
    state = topic_state("team-a.t", SIX, SIX)
    assert (state.ready, state.reason) == (True, "TopicReady")


@pytest.mark.parametrize(
    ("found", "asked", "words"),
    [
        (THREE, SIX, "has 3 partitions and replication factor 1; the spec asks 6 partitions"),
        (SIX, THREE, "has 6 partitions and replication factor 1; the spec asks 3 partitions"),
        (
            TopicSettings(1, 1),
            TopicSettings(1, 3),
            "has 1 partition and replication factor 1; "
            "the spec asks 1 partition and replication factor 3",
        ),
    ],
)
def test_a_topic_with_other_settings_says_both_numbers(found, asked, words):
    state = topic_state("team-a.t", found, asked)
    assert (state.ready, state.reason) == (True, "TopicMismatch")
    assert words in state.message


def test_a_metadata_answer_gives_partitions_and_the_fewest_replicas_or_the_error():
    answer = [
        {"error_code": 0, "topic": "a", "partitions": [{"replicas": [1, 2]}, {"replicas": [1]}]},
        {"error_code": 3, "topic": "gone", "partitions": []},
        {"error_code": 5, "topic": "electing", "partitions": []},
    ]
    assert described(answer) == {"a": TopicSettings(2, 1), "gone": 3, "electing": 5}


def test_an_error_is_named():
    assert error_words(29) == "TopicAuthorizationFailed (error 29)"
    assert error_words(7, "timed out") == "RequestTimedOut (error 7): timed out"


class FakeAdmin:
    """Kafka's admin answers: CreateTopics per topic, then Metadata of the topics that exist."""

    def __init__(self, existing: dict[str, TopicSettings], refused: dict[str, int] = {}) -> None:  # noqa: B006
        self.existing, self.refused = dict(existing), refused
        self.creates: list[list[tuple[str, int, int]]] = []
        self.metadata: list[list[str]] = []

    async def create_topics(self, new_topics: list[Any]) -> Any:
        self.creates.append([(t.name, t.num_partitions, t.replication_factor) for t in new_topics])
        errors = []
        for t in new_topics:
            if t.name in self.refused:
                errors.append((t.name, self.refused[t.name], None))
            elif t.name in self.existing:
                errors.append((t.name, 36, "exists"))
            else:
                self.existing[t.name] = TopicSettings(t.num_partitions, t.replication_factor)
                errors.append((t.name, 0, None))
        return SimpleNamespace(topic_errors=errors)

    async def _send_request(self, request: Any) -> Any:
        assert request._allow_auto_topic_creation is False  # never made by being asked of
        names = list(request._topics)
        self.metadata.append(names)
        answer = [
            {
                "error_code": 0,
                "topic": n,
                "partitions": [{"replicas": [1] * s.replication_factor}] * s.partitions,
            }
            if (s := self.existing.get(n))
            else {"error_code": 3, "topic": n, "partitions": []}
            for n in names
        ]
        return SimpleNamespace(to_object=lambda: {"topics": answer})


def keeper_with(admin: FakeAdmin) -> TopicKeeper:
    keeper = TopicKeeper(timeout=5.0)

    async def fake_admin(client: Any) -> Any:
        return admin

    keeper._admin = fake_admin  # type: ignore[method-assign]
    return keeper


async def ensure_all(keeper: TopicKeeper, *asks: tuple[str, TopicSettings]) -> list[Any]:
    return await asyncio.gather(
        *(keeper.ensure("kafka:9092", t, s.partitions, s.replication_factor) for t, s in asks)
    )


async def test_two_servings_asking_one_new_topic_the_first_made_it_the_other_hears_the_mismatch():
    admin = FakeAdmin({})
    first, second = await ensure_all(keeper_with(admin), ("t", THREE), ("t", SIX))
    assert admin.creates == [[("t", 3, 1)]]  # one request, the topic named once
    assert (first.created, first.state.reason) == (True, "TopicReady")
    assert (second.created, second.state.reason) == (False, "TopicMismatch")
    assert "has 3 partitions" in second.state.message and "asks 6" in second.state.message
    assert first.found == second.found == THREE


async def test_an_existing_topic_is_described_in_one_request_and_compared_never_said_created():
    admin = FakeAdmin({"a": THREE, "b": SIX})
    a, b, c = await ensure_all(keeper_with(admin), ("a", SIX), ("b", SIX), ("c", SIX))
    assert admin.metadata == [["a", "b"]]
    assert (a.created, a.state.reason, a.found) == (False, "TopicMismatch", THREE)
    assert (b.created, b.state.reason, b.found) == (False, "TopicReady", SIX)
    assert (c.created, c.state.reason, c.found) == (True, "TopicReady", SIX)


async def test_a_refused_create_says_why_and_finds_nothing():
    admin = FakeAdmin({}, refused={"t": 29})
    (outcome,) = await ensure_all(keeper_with(admin), ("t", SIX))
    assert (outcome.state.ready, outcome.state.reason) == (False, "TopicCreationFailed")
    assert "TopicAuthorizationFailed (error 29)" in outcome.state.message
    assert (outcome.created, outcome.found) == (False, None)


def test_a_refused_create_is_tried_again():
    assert "TopicCreationFailed" in reconcile._CHECKED_AGAIN


class DescribingKeeper:
    def __init__(self, answers: dict[str, TopicSettings | int] | None) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str, list[str]]] = []

    async def describe(self, servers: str, credentials: str, names: list[str]) -> Any:
        self.asked.append((servers, credentials, list(names)))
        return self.answers


def reconciler(keeper: DescribingKeeper) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        kube=cast(Any, None),
        settings=OperatorSettings(),
        topics=cast(Any, keeper),
        model_ids=cast(Any, None),
    )


def marked(queue: WorkQueue) -> set[tuple[str, str]]:
    return set(queue._marked)


async def test_a_topic_gone_is_forgotten_and_its_servings_marked_a_changed_one_too():
    keeper = DescribingKeeper({"gone": 3, "same": SIX, "grown": TopicSettings(12, 1)})
    rec, queue = reconciler(keeper), WorkQueue()
    for name in ("gone", "same", "grown"):
        rec.kafka.topics[("kafka:9092", name)] = KnownTopic(SIX, "digest")
        rec.kafka.users[("ns", f"uses-{name}")] = ("kafka:9092", name)
    rec.kafka.users[("ns", "also-gone")] = ("kafka:9092", "gone")

    await check_topics(rec, queue)

    assert keeper.asked == [("kafka:9092", "digest", ["gone", "same", "grown"])]  # one request
    assert ("kafka:9092", "gone") not in rec.kafka.topics
    assert rec.kafka.topics[("kafka:9092", "grown")].found == TopicSettings(12, 1)
    assert marked(queue) == {("ns", "uses-gone"), ("ns", "also-gone"), ("ns", "uses-grown")}


async def test_kafka_away_changes_nothing_and_an_unused_topic_is_no_longer_checked():
    keeper = DescribingKeeper(None)
    rec, queue = reconciler(keeper), WorkQueue()
    rec.kafka.topics[("kafka:9092", "used")] = KnownTopic(SIX)
    rec.kafka.topics[("kafka:9092", "unused")] = KnownTopic(SIX)
    rec.kafka.users[("ns", "s")] = ("kafka:9092", "used")

    await check_topics(rec, queue)

    assert keeper.asked == [("kafka:9092", "", ["used"])]
    assert set(rec.kafka.topics) == {("kafka:9092", "used")}
    assert marked(queue) == set()


async def test_a_create_and_a_check_that_both_find_no_client_start_one(monkeypatch):
    started: list[object] = []

    class SlowAdmin:
        def __init__(self, **options: Any) -> None:
            pass

        async def start(self) -> None:
            await asyncio.sleep(0.01)
            started.append(self)

    monkeypatch.setattr(topics, "AIOKafkaAdminClient", SlowAdmin)
    keeper = TopicKeeper(timeout=5.0)
    keeper._security[("kafka:9092", "")] = topics.KafkaSecurity()
    first, second = await asyncio.gather(
        keeper._admin(("kafka:9092", "")), keeper._admin(("kafka:9092", ""))
    )
    assert first is second and len(started) == 1
