"""The inference log's health as the operator sees it: every few seconds the sidecar sums up its
spool and its broker (a small JSON) and, when that changed, writes it to an annotation of its own
Pod through the pods/status subresource; the operator, which watches the serving's pods, turns
the pods' summaries into the serving's LoggingReady condition.

Why pods/status: it is the one place a pod's own observations belong, the operator already
watches pods, and the right to patch pods/status cannot change a pod's spec (its images), which
the right to patch pods could. The sidecar finds its pod from POD_NAME and POD_NAMESPACE (the
Downward API) and its credentials from its ServiceAccount.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from modelserving.api import GROUP
from modelserving.kafka_security import KafkaProblem
from modelserving.kube_access import ApiServer, from_environment
from modelserving.sidecar.config import LoggingConfig
from modelserving.sidecar.spool import Spool

log = logging.getLogger(__name__)

ANNOTATION = f"{GROUP}/inference-log"
CHECK_SECONDS = 5.0  # how often the summary is made (one TCP connect to a broker each time)
REFRESH_SECONDS = 30.0  # a summary whose state did not change is written at most this often
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
) -> dict[str, Any]:
    """The pod's summary: a state and the figures behind it (rounded so that a steady state
    gives the same summary, and so no write). A broker that refuses the producer's TLS or
    credentials is the state (KafkaAuthenticationFailed, KafkaTLSFailed), with its words: it is
    the cause of anything else the spool shows, and what the user can fix."""
    share = spool_bytes / spool_max_bytes if spool_max_bytes else 0.0
    if problem is not None:
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
    return summary


class LogHealthSource(Protocol):
    """What a summary is made of: the running inference log (`InferenceLogPipeline`)."""

    settings: LoggingConfig
    spool: Spool

    def waiting_records(self) -> int: ...

    def oldest_waiting_age(self) -> float: ...

    def accepting(self) -> bool: ...

    def kafka_problem(self) -> KafkaProblem | None: ...


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
    )


class PodAnnotationWriter:
    """Merge-patches one annotation of one pod through pods/status."""

    def __init__(
        self, session: aiohttp.ClientSession, api: ApiServer, namespace: str, pod: str
    ) -> None:
        self._session, self._api = session, api
        self._url = f"{api.url}/api/v1/namespaces/{namespace}/pods/{pod}/status"

    async def write(self, value: str) -> None:
        headers = {**await self._api.headers(), "Content-Type": "application/merge-patch+json"}
        patch = {"metadata": {"annotations": {ANNOTATION: value}}}
        async with self._session.patch(
            self._url, data=json.dumps(patch), headers=headers, ssl=self._api.ssl_context
        ) as resp:
            if resp.status >= 400:
                raise RuntimeError(f"{resp.status}: {(await resp.text())[:200]}")


class LogStatusPublisher:
    """Writes the pod's summary when its state changes, or its figures at most every
    REFRESH_SECONDS; failures are logged and retried at the next check, never raised."""

    def __init__(
        self, pipeline: LogHealthSource, writer: PodAnnotationWriter, check_seconds: float
    ):
        self.pipeline, self.writer, self.check_seconds = pipeline, writer, check_seconds
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0

    async def publish_once(self) -> bool:
        """Check and write if due; True when a write was made."""
        reachable = await broker_reachable(self.pipeline.settings.bootstrap_servers)
        summary = summary_from_pipeline(self.pipeline, reachable)
        now = time.monotonic()
        previous = self._written
        if previous is not None and (
            summary == previous
            or (summary["state"] == previous["state"] and now - self._written_at < REFRESH_SECONDS)
        ):
            return False
        await self.writer.write(json.dumps(summary, separators=(",", ":")))
        self._written, self._written_at = summary, now
        return True

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.publish_once()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:  # once per run of failures
                    log.warning("inference log: cannot write the pod's log status: %s", exc)
                failing = True
            await asyncio.sleep(self.check_seconds)


@contextlib.asynccontextmanager
async def publishing_log_status(
    pipeline: LogHealthSource, kubeconfig: str = "", check_seconds: float = CHECK_SECONDS
) -> AsyncIterator[LogStatusPublisher | None]:
    """Publish while the block runs, when the pod is known (POD_NAME and POD_NAMESPACE set);
    otherwise (a sidecar run outside a pod) do nothing."""
    pod, namespace = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not (pod and namespace):
        yield None
        return
    api = await asyncio.to_thread(from_environment, kubeconfig)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        publisher = LogStatusPublisher(
            pipeline, PodAnnotationWriter(session, api, namespace, pod), check_seconds
        )
        task = asyncio.create_task(publisher.run(), name="inference-log-status")
        try:
            yield publisher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
