"""The inference log's topics in use, described again every --topic-check-seconds: one deleted
by hand is forgotten and its servings reconciled, which make it again with their settings; one
whose settings changed (partitions added, or made anew by a broker's auto-create) has its
servings reconciled, whose LoggingReady compares it with their spec (topics.topic_state).

What it costs: one Kafka Metadata request per set of brokers and credentials (BATCH topics
each) per period, naming only the topics servings use; nothing when none has changed. A topic
no serving uses any more is forgotten here, and checked again if one does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiokafka.errors import UnknownTopicOrPartitionError

from modelserving_operator.kafka.topics import KnownTopic, TopicSettings
from modelserving_operator.reconcile import Reconciler
from modelserving_operator.runtime.kopf_internals import cache_current
from modelserving_operator.runtime.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)


async def check_topics_forever(rec: Reconciler, queue: WorkQueue) -> None:
    """Every --topic-check-seconds, `check_topics`; a failed round is told and the next tried."""
    while True:
        await asyncio.sleep(rec.settings.topic_check_seconds)
        await cache_current()  # a paused standby asks Kafka nothing
        try:
            await check_topics(rec, queue)
        except Exception:  # the next round may fare better; the checks must not end
            log.exception("checking the inference log's topics failed")


async def check_topics(rec: Reconciler, queue: WorkQueue) -> None:
    """Describe the known topics that servings use, per admin client; mark the servings of one
    that is gone or whose settings are not those known in `queue`."""
    users: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for serving, used in rec.kafka.users.items():
        users[used].append(serving)
    for unused in rec.kafka.topics.keys() - users.keys():
        del rec.kafka.topics[unused]
    by_client: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (servers, topic), entry in rec.kafka.topics.items():
        by_client[(servers, entry.credentials)].append(topic)
    clients = sorted(by_client)
    answers = await asyncio.gather(
        *(
            rec.topics.describe(servers, credentials, by_client[(servers, credentials)])
            for servers, credentials in clients
        )
    )
    for (servers, credentials), found in zip(clients, answers, strict=True):
        if found is None:  # Kafka away: the pods say so, and the next round looks again
            continue
        for topic in by_client[(servers, credentials)]:
            now = found.get(topic)
            known = rec.kafka.topics.get((servers, topic))
            if known is None or now == known.found:
                continue
            if isinstance(now, TopicSettings):
                rec.kafka.topics[(servers, topic)] = KnownTopic(now, credentials)
                change = (
                    f"now has {now.partitions} partitions, replication {now.replication_factor}"
                )
            elif now is None or now == UnknownTopicOrPartitionError.errno:
                del rec.kafka.topics[(servers, topic)]  # the servings' reconcile makes it again
                change = "is gone"
            else:  # an error of the moment (a leader being elected): the next round looks again
                continue
            servings = sorted(users[(servers, topic)])
            log.info(
                "the topic %s at %s %s: reconciling the servings that log to it (%s)",
                topic,
                servers,
                change,
                ", ".join(f"{ns}/{name}" for ns, name in servings),
            )
            for serving in servings:
                queue.add(serving, serving_event=True)  # a serving's own: Kafka is checked
