"""The inference log's health as the operator sees it: every few seconds the sidecar sums up its
spool and its broker (a small JSON) and, when that changed, writes it to an annotation of its own
Pod through the pods/status subresource (see pod_status); the operator, which watches the
serving's pods, turns the pods' summaries into the serving's LoggingReady condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from modelserving.api import GROUP
from modelserving.inferencelog.schema_registry import RegistryProblem
from modelserving.kafka_security.diagnosis import KafkaProblem
from modelserving_sidecar.config import LoggingConfig
from modelserving_sidecar.log.spool.segments import Spool
from modelserving_sidecar.pod_status import CHECK_SECONDS, PodStatusPublisher, publishing

log = logging.getLogger(__name__)

ANNOTATION = f"{GROUP}/inference-log"
FILLING_SHARE = 0.5  # a spool fuller than this is "filling"
FULL_SHARE = 0.95

# Summary states, CamelCase as condition reasons are.
FLOWING = "Flowing"
KAFKA_UNREACHABLE = "KafkaUnreachable"
SPOOL_FILLING = "SpoolFilling"
SPOOL_FULL = "SpoolFull"


def summarize(
    *,
    spool_bytes: int,
    spool_max_bytes: int,
    waiting_records: int,
    oldest_age_seconds: float,
    kafka_reachable: bool,
    refusing: bool,
    problem: KafkaProblem | None = None,
    registry_problem: RegistryProblem | None = None,
) -> dict[str, Any]:
    """The pod's summary: a state and the figures behind it (rounded so that a steady state
    gives the same summary, and so no write). A broker that refuses the producer's TLS or
    credentials is the state (KafkaAuthenticationFailed, KafkaTLSFailed), with its words: it is
    the cause of anything else the spool shows, and what the user can fix. So is a schema
    registry that does not give the records' schema id (nothing is sent without it), first."""
    share = spool_bytes / spool_max_bytes if spool_max_bytes else 0.0
    if registry_problem is not None:
        state = registry_problem.reason
    elif problem is not None:
        state = problem.reason
    elif refusing or share >= FULL_SHARE:
        state = SPOOL_FULL
    elif not kafka_reachable:
        state = KAFKA_UNREACHABLE
    elif share >= FILLING_SHARE:
        state = SPOOL_FILLING
    else:
        state = FLOWING
    summary = {
        "state": state,
        "spoolPercent": round(share * 100),
        "waitingRecords": waiting_records,
        "oldestRecordAgeSeconds": round(oldest_age_seconds),
        "kafkaReachable": kafka_reachable,
    }
    if problem is not None:
        summary["kafkaError"] = problem.message
    if registry_problem is not None:
        summary["registryError"] = registry_problem.message
    return summary


class LogHealthSource(Protocol):
    """What a summary is made of: the running inference log (`InferenceLogPipeline`)."""

    settings: LoggingConfig
    spool: Spool

    def waiting_records(self) -> int: ...

    def oldest_waiting_age(self) -> float: ...

    def accepting(self) -> bool: ...

    def kafka_problem(self) -> KafkaProblem | None: ...

    def registry_problem(self) -> RegistryProblem | None: ...


async def broker_reachable(bootstrap_servers: str, timeout: float = 1.0) -> bool:
    """True when a TCP connection to one of the bootstrap servers opens."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (OSError, ValueError, TimeoutError):
            continue
        writer.close()
        return True
    return False


def summary_from_pipeline(pipeline: LogHealthSource, kafka_reachable: bool) -> dict[str, Any]:
    """The summary of a running inference log."""
    return summarize(
        spool_bytes=pipeline.spool.size_bytes,
        spool_max_bytes=pipeline.settings.spool_max_bytes,
        waiting_records=pipeline.waiting_records(),
        oldest_age_seconds=pipeline.oldest_waiting_age(),
        kafka_reachable=kafka_reachable,
        refusing=not pipeline.accepting(),
        problem=pipeline.kafka_problem(),
        registry_problem=pipeline.registry_problem(),
    )


@contextlib.asynccontextmanager
async def publishing_log_status(
    pipeline: LogHealthSource, kubeconfig: str = "", check_seconds: float = CHECK_SECONDS
) -> AsyncIterator[PodStatusPublisher | None]:
    """Publish the log's summary on the pod while the block runs (see pod_status.publishing):
    written when its state changes, its figures at most every REFRESH_SECONDS."""

    async def make() -> tuple[dict[str, Any], object]:
        reachable = await broker_reachable(pipeline.settings.bootstrap_servers)
        summary = summary_from_pipeline(pipeline, reachable)
        return summary, summary["state"]

    async with publishing(
        "inference log status", ANNOTATION, make, kubeconfig, check_seconds
    ) as publisher:
        yield publisher
