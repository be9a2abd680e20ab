"""`durability: spooled`: a request's answer waits until its record is in the spool file. The
pipeline runs for real on a spool in a temporary folder (no broker: Kafka is not part of the
promise); the spool's writes are recorded, or made to fail, to see who waits for them."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Callable

import prometheus_client
import pytest
import pytest_asyncio

from modelserving_sidecar.config import SpoolFullPolicy
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.pipeline import InferenceLogPipeline
from modelserving_sidecar.log.spool.segments import SpoolRecord
from tests.support.exchanges import an_exchange
from tests.support.log_pipelines import count, pipeline_for
from tests.support.waiting import wait_for_async


def exchange(request_id: str) -> Exchange:
    return an_exchange(request_id=request_id)


class Writes:
    """The spool's appends (on the event loop) as they happen: `events` says in which order the
    writes ended and the answers came; `failing` makes the next appends fail as a broken disk
    would; `during` runs inside the next write, while it is under way."""

    def __init__(self, pipeline: InferenceLogPipeline) -> None:
        self.events: list[str] = []
        self.failing = 0
        self.during: Callable[[], object] | None = None
        append = pipeline.spool.append

        def recorded_append(records: list[SpoolRecord]) -> tuple[int, int]:
            if self.during is not None:
                during, self.during = self.during, None
                during()
            if self.failing:
                self.failing -= 1
                self.events.append(f"failed {len(records)}")
                raise OSError(errno.EIO, "the disk fails")
            written = append(records)
            self.events.append(f"wrote {len(records)}")
            return written

        pipeline.spool.append = recorded_append  # type: ignore[method-assign]


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


@pytest_asyncio.fixture
async def running(tmp_path, registry) -> AsyncIterator[tuple[InferenceLogPipeline, Writes]]:
    pipeline = pipeline_for(tmp_path, registry)
    await pipeline.start()
    try:
        yield pipeline, Writes(pipeline)
    finally:
        await pipeline.close()


def answered(writes: Writes, task: asyncio.Future[bool], name: str = "answered") -> None:
    task.add_done_callback(lambda _: writes.events.append(name))


async def test_the_answer_waits_for_its_records_write(running) -> None:
    pipeline, writes = running
    writes.failing = 1  # the first write fails: the answer waits for one that works
    waiting = asyncio.ensure_future(pipeline.spooled(exchange("req-1")))
    answered(writes, waiting)
    await wait_for_async(
        lambda: asyncio.sleep(0, writes.events == ["failed 1"]), timeout=5, what="a failed write"
    )
    assert not waiting.done(), "answered before its record was written"

    pipeline.sender.acked.set()  # as Kafka's acks would: the writer tries again at once
    assert await asyncio.wait_for(waiting, 5) is True
    assert writes.events == ["failed 1", "wrote 1", "answered"]
    segment = b"".join(p.read_bytes() for p in pipeline.spool.directory.glob("*.seg"))
    assert b"req-1" in segment


async def test_requests_that_arrive_during_a_write_share_the_next_one(running, registry) -> None:
    pipeline, writes = running
    later: list[asyncio.Future[bool]] = []

    def five_arrive() -> None:
        later.extend(
            asyncio.ensure_future(pipeline.spooled(exchange(f"req-{i}"))) for i in range(1, 6)
        )
        for i, task in enumerate(later, start=1):
            answered(writes, task, f"answered {i}")

    writes.during = five_arrive
    first = asyncio.ensure_future(pipeline.spooled(exchange("req-0")))
    answered(writes, first, "answered 0")
    assert await asyncio.wait_for(first, 5) is True
    assert await asyncio.wait_for(asyncio.gather(*later), 5) == [True] * 5
    assert count(registry, "requests_seen_total", outcome="success") == 6
    # One write for the first, one shared by the five, and no answer before its own write.
    writes_made = [e for e in writes.events if e.startswith("wrote")]
    assert writes_made == ["wrote 1", "wrote 5"]
    position = writes.events.index
    assert position("wrote 1") < position("answered 0")
    assert all(position("wrote 5") < position(f"answered {i}") for i in range(1, 6))
    assert pipeline.spool.next_id == 7  # six records, ids 1 to 6


async def test_a_record_that_cannot_be_kept_is_answered_false(tmp_path, registry) -> None:
    # A spool too small for one record, under dropNewest: the record is dropped, and counted.
    pipeline = pipeline_for(
        tmp_path, registry, spoolMaxBytes=1, spoolFullPolicy=SpoolFullPolicy.DROP_NEWEST.value
    )
    await pipeline.start()
    try:
        assert await asyncio.wait_for(pipeline.spooled(exchange("req-1")), 5) is False
        assert count(registry, "records_dropped_total", reason="spool_full") == 1
    finally:
        await pipeline.close()


async def test_an_exchange_the_sampling_leaves_out_is_not_waited_for(tmp_path) -> None:
    pipeline = pipeline_for(tmp_path, successSampleRate=0)
    await pipeline.start()
    try:
        assert await asyncio.wait_for(pipeline.spooled(exchange("req-1")), 1) is True
        assert pipeline.spool.next_id == 1  # nothing written
    finally:
        await pipeline.close()
