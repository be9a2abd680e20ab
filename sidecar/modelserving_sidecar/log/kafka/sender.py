"""The inference log's Kafka side: records read from the spool in order (from memory while the
writer's recent batches are there, from disk after a restart or when the sender fell behind)
and handed to an idempotent `acks=all` aiokafka producer, as few batches as fit, one per
partition. Each time Kafka's acks move, the acknowledged position goes to the spool's position
file (through `write_position`, at once), and at most `maxInFlightRecords` records are
sent beyond the position written there, so a SIGKILL sends again at most that many.

A failed or stalled send makes the sender drop its producer, make a new one, and send again from
the oldest unacknowledged record (the bookkeeping is `AckTracker`'s), so an outage or a wedged
producer costs duplicates at worst, never a record.

A secured Kafka's credentials are files (Secrets mounted in the pod), read by each new producer.
A producer the broker refuses (a wrong password, an untrusted certificate) is diagnosed once per
change (`problem`, published in the pod's log status) and tried again with a backoff, so a fixed
Secret is used within seconds; when the files change in place (a rotation), the sender stops
sending, waits for what is in flight to be acknowledged, and makes a new producer: no record is
sent twice for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelserving.kafka_security.diagnosis import KafkaProblem, diagnose, problem_of
from modelserving.library_internals import fail_pending_batches, record_size
from modelserving_sidecar.config import ConfigError, LogCompression, LoggingConfig
from modelserving_sidecar.log.ack_tracker import AckTracker, SendRun
from modelserving_sidecar.log.framing import RegistryFraming, reframed
from modelserving_sidecar.log.kafka.partitioner import partition_of
from modelserving_sidecar.log.metrics import InferenceLogMetrics
from modelserving_sidecar.log.spool.segments import Spool, SpoolRecord
from modelserving_sidecar.log.status import broker_reachable

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer
    from aiokafka.producer.message_accumulator import BatchBuilder

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 0.25  # how long the sender waits for records or acks before looking again
_READ_BATCH = 1000  # records read from the spool per thread hop
_PRODUCER_BATCH_BYTES = 256 * 1024  # per partition: 1 KB records in few requests
# A batch this big goes at once; a smaller one lingers (linger_ms) for more records to join it.
# The producer holds one batch per partition at a time, so a busy sidecar would otherwise wait
# a linger per run of records.
_LINGER_UNDER_BYTES = 64 * 1024
_MAX_REQUEST_BYTES = 1024 * 1024  # the producer's max_request_size (aiokafka's default)
_SIZE_CHECK_BYTES = 512 * 1024  # smaller values always fit: their size is not worked out
_RETRY_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)

Run = tuple[int, list[SpoolRecord]]  # the first id and the records of consecutive ids


def check_compression(codec: LogCompression) -> None:
    """Fail the start when the configured codec needs an extra that is not installed."""
    from aiokafka import codec as kafka_codec

    available = {
        LogCompression.NONE: True,
        LogCompression.GZIP: kafka_codec.has_gzip(),
        LogCompression.LZ4: kafka_codec.has_lz4(),
        LogCompression.ZSTD: kafka_codec.has_zstd(),
        LogCompression.SNAPPY: kafka_codec.has_snappy(),
    }
    if not available[codec]:
        raise ConfigError(
            f"logging.compression: {codec} needs a library that is not installed "
            "(aiokafka's extras); use gzip or none"
        )


class _RewindNeeded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KafkaSender:
    """Sends a spool's records to the serving's topic and tracks Kafka's acknowledgements."""

    def __init__(
        self,
        settings: LoggingConfig,
        spool: Spool,
        metrics: InferenceLogMetrics,
        client_id: str,
        tail_limit: int,
        write_position: Callable[[int], None],
        framing: RegistryFraming | None = None,
    ) -> None:
        """`spool` is open; `tail_limit` bounds the records of recent batches kept in memory;
        `write_position` has the acknowledged position written to disk (never blocking), and
        `position_written` is to be called once it is. With a `framing`, nothing is sent before
        the schema id is known, and each record is sent framed with it."""
        self.settings = settings
        self._framing = framing
        self.spool = spool
        self.metrics = metrics
        self.client_id = client_id
        self.tracker = AckTracker(spool.acked_id, spool.next_id)
        self._write_position = write_position
        self._position_on_disk = spool.acked_id  # the acknowledged position written to disk
        self.acked = asyncio.Event()  # set whenever acks move (or a rewind is asked for)
        self._spooled = asyncio.Event()
        # Batches appended to the spool, kept so that they need not be read back (bounded: what
        # falls off is read from disk): (first id, records).
        self._tail: collections.deque[Run] = collections.deque()
        self._tail_records = 0
        self._tail_limit = tail_limit
        self._written_next = spool.next_id  # the id after the last record appended
        self._disk_next: int | None = None  # where the spool's reader stands (None: to seek)
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        self._last_progress = time.monotonic()
        # Why the broker refuses the producer (TLS, authentication); None while it does not.
        self.problem: KafkaProblem | None = None
        self._credentials = self._credentials_stamp()  # the files as the producer read them
        self._renewing = False  # the files changed: a new producer once nothing is in flight

    @property
    def acked_id(self) -> int:
        """Every record up to this id is in Kafka."""
        return self.tracker.acked_id

    def appended(self, first_id: int, records: list[SpoolRecord]) -> None:
        """The writer appended these records to the spool: they can be sent."""
        self._written_next = first_id + len(records)
        self._tail.append((first_id, records))
        self._tail_records += len(records)
        while self._tail_records > self._tail_limit and len(self._tail) > 1:
            _, dropped = self._tail.popleft()  # still on disk: read from there if needed
            self._tail_records -= len(dropped)
        self._spooled.set()

    def position_written(self, acked_id: int) -> None:
        """The acknowledged position on disk is `acked_id`: the window may move on."""
        if acked_id > self._position_on_disk:
            self._position_on_disk = acked_id
            self.acked.set()

    async def run(self) -> None:
        """Send for as long as the sidecar runs, replacing the producer when it fails."""
        failures = 0
        while True:
            try:
                if self._producer is None:
                    try:
                        self._producer = await self._new_producer()
                    except Exception as exc:
                        await self._refused(exc)
                        if self.problem is None:
                            raise
                        # Refused, and said once: nothing was sent, so nothing to rewind.
                        failures += 1
                        await asyncio.sleep(_RETRY_BACKOFF[min(failures, len(_RETRY_BACKOFF)) - 1])
                        continue
                    self._accepted()
                await self._send_some()
                failures = 0
            except asyncio.CancelledError:
                raise
            except _RewindNeeded as exc:
                await self._rewind(exc.reason)
                failures += 1
            except Exception as exc:
                log.warning("inference log: Kafka producer failed: %s", exc)
                await self._rewind(type(exc).__name__)
                failures += 1
            if failures:
                await asyncio.sleep(_RETRY_BACKOFF[min(failures, len(_RETRY_BACKOFF)) - 1])

    async def stop(self) -> None:
        """Drop the producer; what it had not delivered stays in the spool."""
        await self._drop_producer()

    async def _refused(self, exc: Exception) -> None:
        """A producer did not start: find whether the broker refuses its TLS or credentials
        (aiokafka says only that it could not bootstrap), and say so once per change."""
        problem = problem_of(exc) or await diagnose(
            self.settings.bootstrap_servers, self.settings.kafka_security
        )
        if problem != self.problem and problem is not None:
            log.error(
                "inference log: Kafka refuses the producer (%s): %s; records wait in the spool",
                problem.reason,
                problem.message,
            )
        self.problem = problem

    def _accepted(self) -> None:
        if self.problem is not None:
            log.info(
                "inference log: Kafka accepts the producer again (%s is over); "
                "sending what waits in the spool",
                self.problem.reason,
            )
        self.problem = None

    def _credentials_stamp(self) -> tuple[tuple[str, int, int], ...]:
        """The security files' identity now (a Secret's update swaps them: new inode, time)."""
        stamp = []
        for name in self.settings.kafka_security.files():
            try:
                info = os.stat(name)
            except OSError:
                stamp.append((name, 0, 0))
                continue
            stamp.append((name, info.st_ino, info.st_mtime_ns))
        return tuple(stamp)

    def check_credentials(self) -> None:
        """Called now and then: when the security files changed since the producer read them,
        renew the producer once nothing is in flight."""
        stamp = self._credentials_stamp()
        if stamp != self._credentials and self._producer is not None and not self._renewing:
            log.info("inference log: the Kafka credentials changed; renewing the producer")
            self._renewing = True
            self._spooled.set()

    async def check_stall(self) -> None:
        """Replace a producer that has made no progress for `producerStallSeconds` while the
        broker accepts connections (a wedged producer); warn when the broker is unreachable."""
        stalled_for = time.monotonic() - self._last_progress
        if not self.tracker.awaiting_acks() or stalled_for < self.settings.producer_stall_seconds:
            return
        if await broker_reachable(self.settings.bootstrap_servers):
            self._ask_rewind("stalled")
        else:
            log.warning(
                "inference log: Kafka unreachable for %.0f s; %d records wait in the spool",
                stalled_for,
                self.spool.next_id - 1 - self.acked_id,
            )
            self._last_progress = time.monotonic()  # warn once per stall period

    # ----------------------------------------------------------------- producing

    async def _new_producer(self) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer

        settings = self.settings
        self._credentials = self._credentials_stamp()  # before reading: a change after shows
        producer = AIOKafkaProducer(
            **settings.kafka_security.client_options(),
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            compression_type=None
            if settings.compression is LogCompression.NONE
            else str(settings.compression),
            max_batch_size=_PRODUCER_BATCH_BYTES,
            request_timeout_ms=int(settings.send_timeout_seconds * 1000),
            client_id=self.client_id,
        )
        try:
            await producer.start()
            self._partitions = sorted(await producer.partitions_for(settings.topic))
        except BaseException:
            await producer.stop()
            raise
        self._last_progress = time.monotonic()
        return producer

    async def _send_some(self) -> None:
        framing = self._framing
        if framing is not None and framing.prefix is None:  # records wait for their id
            await wait_event(framing.known, HOUSEKEEPING_SECONDS)
            return
        tracker = self.tracker
        if tracker.rewind_reason is not None:
            raise _RewindNeeded(tracker.rewind_reason)
        if self._renewing:
            await self._renew()
            return
        # Counted from the position on disk, not Kafka's: what a SIGKILL would send again.
        unwritten = tracker.acked_id - self._position_on_disk
        room = self.settings.max_in_flight_records - tracker.in_flight_records - unwritten
        if room <= 0:
            self.acked.clear()
            await wait_event(self.acked, HOUSEKEEPING_SECONDS)
            return
        self._spooled.clear()
        runs = self._from_memory(room)
        if runs is None and tracker.next_send < self._written_next:
            runs = await self._from_disk(room)
        if runs is None:
            await wait_event(self._spooled, HOUSEKEEPING_SECONDS)
            return
        for first, records in runs:
            await self._produce(first, records)

    def _from_memory(self, room: int) -> list[Run] | None:
        """The records from the next id on, when the tail of appended batches has them."""
        tail, start = self._tail, self.tracker.next_send
        if not tail or tail[0][0] > start or start >= self._written_next:
            return None
        records: list[SpoolRecord] = []
        for first, batch in tail:
            if first + len(batch) <= start:
                continue
            records += batch[max(0, start - first) : max(0, start - first) + room - len(records)]
            if len(records) >= room:
                break
        return [(start, records)]

    async def _from_disk(self, room: int) -> list[Run] | None:
        """The records from the next id on, read back from the spool (after a restart, or
        when the sender fell behind the tail kept in memory): runs of consecutive ids."""
        start = self.tracker.next_send
        if self._disk_next != start:
            self.spool.seek(start)
        result = await asyncio.to_thread(self.spool.read, min(room, _READ_BATCH))
        self._disk_next = self.spool.read_next_id
        if result.corrupt or result.missing_ids:
            self.metrics.dropped.labels("corrupt").inc(result.missing_ids)
            log.error(
                "inference log: %d corrupt stretches in the spool skipped (%d records lost)",
                result.corrupt,
                result.missing_ids,
            )
        runs: list[Run] = []
        for spooled in result.records:
            if spooled.id < self.tracker.next_send:
                continue
            if runs and runs[-1][0] + len(runs[-1][1]) == spooled.id:
                runs[-1][1].append(spooled.record)
            else:
                runs.append((spooled.id, [spooled.record]))
        return runs or None

    async def _renew(self) -> None:
        """A new producer for new credentials, once the old one's sends are acknowledged: with
        nothing in flight, nothing is sent again."""
        if self.tracker.in_flight_records:
            self.acked.clear()
            await wait_event(self.acked, HOUSEKEEPING_SECONDS)
            return
        self._renewing = False
        self.metrics.producer_restarts.labels("credentials_changed").inc()
        await self._drop_producer()  # run() makes the next one, with the files as they are now

    async def _produce(self, first: int, records: list[SpoolRecord]) -> None:
        """Hand a run of records to the producer as few Kafka batches as fit, one per partition
        (partitioned by key as Kafka's Java client does), with one pending ack for the run."""
        tracker = self.tracker
        if tracker.rewind_reason is not None:
            raise _RewindNeeded(tracker.rewind_reason)
        run, replays = tracker.begin_run(
            first, len(records), records[0].timestamp_ms, time.monotonic()
        )
        if replays:
            self.metrics.replayed.inc(replays)
        records = tracker.unsent(run, records)
        partitions = self._partitions
        if len(partitions) == 1 or not records:
            groups = [(partitions[0] if partitions else 0, records)]
        else:
            by_partition: dict[int, list[SpoolRecord]] = {}
            for record in records:
                by_partition.setdefault(partition_of(record.key, partitions), []).append(record)
            groups = list(by_partition.items())
        producer = self._producer
        assert producer is not None
        prefix = self._framing.prefix if self._framing is not None else None
        for partition, group in groups:
            batch, count = producer.create_batch(), 0
            for record in group:
                value = record.value
                if prefix is not None:  # spooled before the id was known: framed now
                    value = reframed(value, prefix)
                key, headers, ts = record.key, list(record.headers), record.timestamp_ms
                if len(value) > _SIZE_CHECK_BYTES and (
                    record_size(key, value, headers) > _MAX_REQUEST_BYTES
                ):
                    self.metrics.dropped.labels("too_large").inc()
                    log.error(
                        "inference log: a record of %d bytes is too large for Kafka; dropped",
                        len(value),
                    )
                    continue
                if batch.append(timestamp=ts, key=key, value=value, headers=headers) is None:
                    await self._send_batch(batch, partition, count, run)
                    batch, count = producer.create_batch(), 0
                    batch.append(timestamp=ts, key=key, value=value, headers=headers)
                count += 1
            if count:
                if batch.size() >= _LINGER_UNDER_BYTES:
                    batch.close()  # big enough: sent at once, no linger waiting for more
                await self._send_batch(batch, partition, count, run)
        tracker.seal(run)
        if run.done:
            self._acks_moved()

    async def _send_batch(
        self, batch: BatchBuilder, partition: int, count: int, run: SendRun
    ) -> None:
        assert self._producer is not None
        self.tracker.batch_sent(run)
        future = await self._producer.send_batch(batch, self.settings.topic, partition=partition)
        future.add_done_callback(functools.partial(self._delivered, run, count))

    def _delivered(self, run: SendRun, count: int, future: asyncio.Future[object]) -> None:
        if future.cancelled() or future.exception() is not None:
            exc = future.exception() if not future.cancelled() else None
            if run.generation == self.tracker.generation:
                self._ask_rewind(type(exc).__name__ if exc else "cancelled")
            return
        if not self.tracker.batch_acked(run):
            return  # a producer since replaced: its records are sent again
        self.metrics.produced.inc(count)
        if run.done:
            self.metrics.send_latency.observe(time.monotonic() - run.sent_at)
            self._acks_moved()

    def _acks_moved(self) -> None:
        self._last_progress = time.monotonic()
        self._write_position(self.tracker.acked_id)
        # Acknowledged batches are never sent again: the walk of the tail stays short.
        tail, acked = self._tail, self.tracker.acked_id
        while tail and tail[0][0] + len(tail[0][1]) - 1 <= acked:
            self._tail_records -= len(tail.popleft()[1])
        self.acked.set()

    def _ask_rewind(self, reason: str) -> None:
        if self.tracker.rewind_reason is None:
            self.tracker.request_rewind(reason)
            self._spooled.set()
            self.acked.set()

    async def _rewind(self, reason: str) -> None:
        """New producer; send again everything not acked, from the oldest, skipping acked ones.
        The tracker moves to the next generation first: what the old producer reports while it
        is dropped (its batches failed on purpose) is ignored."""
        self.tracker.rewind()
        self.metrics.producer_restarts.labels(reason).inc()
        log.warning(
            "inference log: replacing the Kafka producer (%s); resending from record %d",
            reason,
            self.acked_id + 1,
        )
        await self._drop_producer()
        self._disk_next = None
        self._last_progress = time.monotonic()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # stop() waits for every pending batch, which with the broker down never comes: fail
        # them first (they will be sent again from the spool).
        from aiokafka.errors import KafkaTimeoutError

        fail_pending_batches(producer, KafkaTimeoutError("producer replaced"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=5)


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Until the event is set or `seconds` have passed (wait_for would make a task per call)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
