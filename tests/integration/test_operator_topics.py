"""The inference log's topics under churn, on the real broker: a topic deleted by hand is made
again with the serving's partitions (and one the broker's auto-create made first, with its own
defaults, is told as a mismatch), a create that fails while the broker is away is tried
again until it is back (LoggingReady says why meanwhile), and of two servings naming one topic
with different partition counts, the second is told the mismatch, not that it made the topic."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.metadata import MetadataRequest
from kubernetes import client

from modelserving import api
from modelserving_operator.kafka.topics import TopicSettings, described
from tests.support.servings import condition, get_serving, serving_manifest
from tests.support.waiting import wait_for


@pytest.fixture
def operator_flags() -> list[str]:
    """Topics in use are looked at again every 3 s (30 s by default)."""
    return FLAGS


FLAGS = ["--topic-check-seconds", "3"]
# One operator, with FLAGS, for the tests that only make servings and topics and look at what it
# does with them.
SHARED_OPERATOR = FLAGS


def topic_settings(bootstrap: str, topic: str) -> TopicSettings | None:
    """The topic's partitions and replication factor, None while it does not exist; the broker
    auto-creates topics, and this asks with auto-creation off."""

    async def describe() -> TopicSettings | int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            request = MetadataRequest([topic], allow_auto_topic_creation=False)
            return described((await admin._send_request(request)).to_object()["topics"])[topic]
        finally:
            await admin.close()

    found = asyncio.run(describe())
    return found if isinstance(found, TopicSettings) else None


def delete_topic(bootstrap: str, topic: str) -> None:
    async def delete() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(delete())


def create_serving(crds, namespace: str, name: str, topic: str, partitions: int) -> None:
    kafka = {"kafka": {"topic": topic, "partitions": partitions}}
    crds.create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(name, logging=kafka)
    )


def logging_ready(crds, namespace: str, name: str) -> dict:
    return condition(get_serving(crds, namespace, name), "LoggingReady")


def events_of(kube_client, namespace: str, reason: str) -> list[str]:
    """The names of the servings that an Event of `reason` is about."""
    events = client.CoreV1Api(kube_client).list_namespaced_event(namespace).items
    return sorted(e.involved_object.name for e in events if e.reason == reason)


def test_a_topic_deleted_by_hand_is_made_again_with_the_servings_partitions(
    operator, crds, namespace, local_env, topic
):
    # Given a serving whose topic the operator made with 3 partitions
    topic, bootstrap = f"{namespace}.{topic}", local_env.kafka_bootstrap
    create_serving(crds, namespace, "mnist", topic, partitions=3)
    wait_for(
        lambda: logging_ready(crds, namespace, "mnist").get("reason") == "TopicReady",
        60,
        "LoggingReady TopicReady",
    )
    assert topic_settings(bootstrap, topic) == TopicSettings(3, 1)

    # When someone deletes the topic
    delete_topic(bootstrap, topic)
    wait_for(lambda: topic_settings(bootstrap, topic) is None, 10, "the topic gone", 0.05)

    # Then the operator makes it again, with the serving's 3 partitions, not the broker's 1
    made = wait_for(lambda: topic_settings(bootstrap, topic), 30, "the topic made again")
    assert made == TopicSettings(3, 1)
    assert logging_ready(crds, namespace, "mnist")["reason"] == "TopicReady"


def auto_create(bootstrap: str, topic: str) -> TopicSettings | int:
    """Ask of the topic as a producer does, letting the broker create it with its defaults."""

    async def ask() -> TopicSettings | int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            request = MetadataRequest([topic], allow_auto_topic_creation=True)
            return described((await admin._send_request(request)).to_object()["topics"])[topic]
        finally:
            await admin.close()

    return asyncio.run(ask())


# A check every 10 s: the broker's auto-create comes first, as a sidecar's producer could.
@pytest.mark.parametrize("operator_flags", [["--topic-check-seconds", "10"]])
def test_a_topic_a_broker_made_again_with_its_defaults_is_told_as_a_mismatch(
    operator, crds, namespace, local_env, topic
):
    # Given a serving whose topic the operator made with 3 partitions
    topic, bootstrap = f"{namespace}.{topic}", local_env.kafka_bootstrap
    create_serving(crds, namespace, "mnist", topic, partitions=3)
    wait_for(
        lambda: logging_ready(crds, namespace, "mnist").get("reason") == "TopicReady",
        60,
        "LoggingReady TopicReady",
    )

    # When someone deletes it and a producer's request makes it again with the broker's 1
    delete_topic(bootstrap, topic)
    wait_for(lambda: topic_settings(bootstrap, topic) is None, 10, "the topic gone", 0.05)
    made = wait_for(
        lambda: isinstance(found := auto_create(bootstrap, topic), TopicSettings) and found,
        10,
        "the topic made by the broker",
        0.05,
    )
    assert made == TopicSettings(1, 1)

    # Then LoggingReady says the topic is not what the spec asks, with both numbers
    told = wait_for(
        lambda: (
            (c := logging_ready(crds, namespace, "mnist")).get("reason") == "TopicMismatch" and c
        ),
        30,
        "LoggingReady TopicMismatch",
    )
    assert "has 1 partition and replication factor 1" in told["message"], told
    assert "the spec asks 3 partitions" in told["message"], told


def test_a_create_that_fails_while_the_broker_is_away_is_tried_again_until_it_is_back(
    operator, crds, namespace, local_env, topic, kafka_broker
):
    topic = f"{namespace}.{topic}"
    kafka_broker.stop()
    try:
        # Given a new serving while the broker is away
        create_serving(crds, namespace, "mnist", topic, partitions=2)

        # Then LoggingReady is False and says why
        down = wait_for(
            lambda: (
                (c := logging_ready(crds, namespace, "mnist")).get("status") == "False"
                and c.get("reason") not in ("Checking", None)
                and c
            ),
            60,
            "LoggingReady False with a reason",
        )
        assert down["reason"] == "KafkaUnreachable", down
        assert kafka_broker.bootstrap in down["message"]
    finally:
        kafka_broker.start()

    # When the broker is back, the operator tries again unasked and makes the topic
    up = wait_for(
        lambda: (c := logging_ready(crds, namespace, "mnist")).get("status") == "True" and c,
        90,
        "LoggingReady True once the broker is back",
    )
    assert up["reason"] == "TopicReady"
    assert topic_settings(kafka_broker.bootstrap, topic) == TopicSettings(2, 1)


def test_two_servings_naming_one_topic_with_other_partitions_the_second_is_told_the_mismatch(
    operator, crds, kube_client, namespace, local_env, topic
):
    # Given a serving that made its topic with 2 partitions
    topic = f"{namespace}.{topic}"
    create_serving(crds, namespace, "first", topic, partitions=2)
    wait_for(
        lambda: logging_ready(crds, namespace, "first").get("reason") == "TopicReady",
        60,
        "first's LoggingReady TopicReady",
    )

    # When a second serving names the same topic with 4 partitions
    create_serving(crds, namespace, "second", topic, partitions=4)

    # Then the second's LoggingReady says the mismatch, with both numbers
    second = wait_for(
        lambda: (
            (c := logging_ready(crds, namespace, "second")).get("reason") == "TopicMismatch" and c
        ),
        60,
        "second's LoggingReady TopicMismatch",
    )
    assert "has 2 partitions and replication factor 1" in second["message"], second
    assert "the spec asks 4 partitions and replication factor 1" in second["message"], second
    # And a Warning Event tells it; only the first was told it made the topic
    wait_for(
        lambda: events_of(kube_client, namespace, "TopicMismatch") == ["second"],
        30,
        "the second's TopicMismatch Event",
    )
    assert events_of(kube_client, namespace, "TopicCreated") == ["first"]
    assert logging_ready(crds, namespace, "first")["reason"] == "TopicReady"
    assert topic_settings(local_env.kafka_bootstrap, topic) == TopicSettings(2, 1)
