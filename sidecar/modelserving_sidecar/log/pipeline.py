"""The inference log pipeline: exchanges from the request path become `inferencelog` records,
written ahead to the disk spool, then produced to Kafka; Kafka's acks free the spool.

`submit()` decides inline whether the exchange is logged at all (the mode and the sampling
rates, a hash of the request id: see `log_policy`) and only appends to a bounded deque;
`spooled()` does the same and waits for the write. A writer task redacts and cuts the payloads,
encodes what is queued (`log_records`) and appends it to the spool in one write (to the page
cache, on the loop: see `spool_segments`); the syncer thread forces the writes to disk once per
fsync interval (`spool_syncer`). The sender (`kafka_sender`) hands the spooled records to Kafka
in order and tracks the acks (`ack_tracker`), writing the acknowledged position each time it
moves; housekeeping writes it to the spool's ledger, deleting acknowledged segments, and keeps
the gauges. What cannot be kept (spool full under `dropNewest`, a record larger than Kafka
takes, corruption on disk) is counted in `modelserving_inference_log_records_dropped_total`.

No exchange can stop the pipeline: the record maker never raises for what a payload holds (one
it cannot make is logged as unencodable, see `log_records`), and the writer makes a record of
each exchange under its own `try`. Should a task of the pipeline end all the same, `failure()`
says why: `/healthz` then fails so that the kubelet restarts the sidecar (the spool keeps what
was written), and requests waiting for their record are answered 503 rather than left to hang.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable

import prometheus_client

from modelserving.inferencelog.schema_registry import RegistryProblem
from modelserving.kafka_security.diagnosis import KafkaProblem
from modelserving.library_internals import missing_c_extensions
from modelserving_sidecar.config import (
    LogDurability,
    LoggingMode,
    SidecarConfig,
    SpoolFullPolicy,
)
from modelserving_sidecar.log.exchange import Exchange, InferenceLogSink
from modelserving_sidecar.log.framing import RegistryFraming
from modelserving_sidecar.log.kafka.client_logs import summarise_aiokafka_logs
from modelserving_sidecar.log.kafka.sender import (
    HOUSEKEEPING_SECONDS,
    KafkaSender,
    check_compression,
    wait_event,
)
from modelserving_sidecar.log.metrics import InferenceLogMetrics
from modelserving_sidecar.log.records import SpoolRecordMaker, pod_name, policy_of
from modelserving_sidecar.log.spool.segments import Spool, SpoolRecord
from modelserving_sidecar.log.spool.syncer import SpoolSyncer
from modelserving_sidecar.log.status import publishing_log_status

log = logging.getLogger(__name__)

_WRITE_BATCH = 5000  # exchanges encoded and spooled per write at most
# Exchanges shaped and encoded between two yields to the event loop: the writer shares the loop
# with the request path, and a batch of redacted JSON must not hold a request back for long.
_ENCODE_SLICE = 100
_ACCEPT_HEADROOM = 0.9  # under `reject`, refuse before the queue is full: submits race accepting()


class InferenceLogPipeline:
    """The log as the request path sees it (`InferenceLogSink`), and the tasks behind it."""

    _loop: asyncio.AbstractEventLoop  # the loop of start(): the answers' waits are its futures

    def __init__(
        self, config: SidecarConfig, metrics: InferenceLogMetrics, pod: str | None = None
    ) -> None:
        self.config = config
        self.settings = config.logging
        self.metrics = metrics
        self.pod = pod or pod_name()
        self.spool = Spool(
            self.settings.spool_dir,
            max_bytes=self.settings.spool_max_bytes,
            segment_bytes=self.settings.spool_segment_bytes,
            fsync_interval=self.settings.spool_fsync_interval_seconds,
        )
        metrics.watch_spool(self.spool)
        self.policy = policy_of(self.settings)
        self._maker = SpoolRecordMaker(config.model, self.settings, self.pod, metrics.count_changes)
        registry = self.settings.schema_registry
        self.framing = RegistryFraming(registry) if registry is not None else None
        self._framing_task: asyncio.Task[None] | None = None
        self._counts = metrics.counts
        self._queue: collections.deque[Exchange] = collections.deque()
        self._queue_size = self.settings.queue_size
        rejecting = self.settings.spool_full_policy is SpoolFullPolicy.REJECT
        self._accept_limit = (
            int(self._queue_size * _ACCEPT_HEADROOM) if rejecting else self._queue_size + 1
        )
        self._spool_full = False  # under reject: records wait for room, predictions get 503
        self._held: list[SpoolRecord] = []  # encoded, waiting for spool room (reject)
        # Exchanges are numbered in queue order from 1: made (encoded) so far, the first held.
        self._made_total = 0
        self._held_first = 0
        # durability spooled: requests waiting for their record's write, by exchange number.
        self._durable = self.settings.durability is LogDurability.SPOOLED
        self._waiting: collections.deque[tuple[int, asyncio.Future[bool]]] = collections.deque()
        self._queued = asyncio.Event()
        self._syncer: SpoolSyncer | None = None
        self._last_flush = 0.0
        self._writer_busy = False
        self._sender: KafkaSender | None = None  # made once the spool is open
        self._persisted_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting_since: float | None = None  # wall time records began to wait unsent
        self._failure: str | None = None  # why a task of the pipeline ended before close()
        self._closing = False

    @property
    def sender(self) -> KafkaSender:
        assert self._sender is not None, "the pipeline is not started"
        return self._sender

    # ----------------------------------------------------------------- the sink

    def accepting(self) -> bool:
        if self._failure is not None:  # until the restart: the policy says what a full log does
            return self.settings.spool_full_policy is not SpoolFullPolicy.REJECT
        return not self._spool_full and len(self._queue) < self._accept_limit

    def failure(self) -> str | None:
        """Why the pipeline stopped working (a task of it ended), or None while it works."""
        return self._failure

    def waiting_records(self) -> int:
        """Records in the spool that Kafka has not acknowledged yet."""
        return max(0, self.spool.next_id - 1 - self.sender.acked_id)

    def oldest_waiting_age(self) -> float:
        """Seconds the oldest unacknowledged record has waited: its own timestamp when it is
        in flight, else (no producer, records only on disk) since records began to wait."""
        now = time.time()
        oldest_ms = self.sender.tracker.oldest_unacked_timestamp_ms()
        if oldest_ms is not None:
            return max(0.0, now - oldest_ms / 1000)
        if self._waiting_since is not None and self.waiting_records():
            return max(0.0, now - self._waiting_since)
        return 0.0

    def kafka_problem(self) -> KafkaProblem | None:
        """Why Kafka refuses the producer (TLS, authentication), while it does."""
        return self.sender.problem

    def registry_problem(self) -> RegistryProblem | None:
        """Why the schema registry does not give the records' schema id, while it does not."""
        return self.framing.problem if self.framing is not None else None

    def submit(self, exchange: Exchange) -> None:
        try:
            self._take(exchange)
        except Exception:  # the request path must never see the log fail
            log.exception("inference log: submit failed")

    def spooled(self, exchange: Exchange) -> Awaitable[bool]:
        # A future, not a coroutine: the answer's one wait costs no frame of its own.
        try:
            taken = self._take(exchange)
            if taken is True:
                waiter: asyncio.Future[bool] = self._loop.create_future()
                self._waiting.append((self._made_total + len(self._queue), waiter))
                return waiter
            kept = taken is None  # sampled out: no record is owed
        except Exception:  # the request path must never see the log fail
            log.exception("inference log: submit failed")
            kept = False
        decided: asyncio.Future[bool] = self._loop.create_future()
        decided.set_result(kept)
        return decided

    def _take(self, exchange: Exchange) -> bool | None:
        """Count the exchange and queue it: True when queued, None when the sampling leaves it
        out, False when the queue is full (dropped, and counted)."""
        outcome = 0 if 200 <= exchange.status < 300 else 1
        counts = self._counts
        counts.seen[outcome] += 1
        if not self.policy.sampled(exchange.request_id, exchange.status):
            counts.sampled_out[outcome] += 1
            return None
        if self._failure is not None:  # nothing would ever write it
            self.metrics.dropped.labels("failed").inc()
            return False
        if len(self._queue) >= self._queue_size:
            self.metrics.dropped.labels("queue_full").inc()
            return False
        self._queue.append(exchange)
        if not self._queued.is_set():
            self._queued.set()
        return True

    def _release(self, before: int, kept: bool) -> None:
        """Resume the requests whose exchanges are numbered below `before`: their records are
        in the spool file (kept) or dropped."""
        waiting = self._waiting
        while waiting and waiting[0][0] < before:
            waiter = waiting.popleft()[1]
            if not waiter.done():  # a caller that went away cancels its wait
                waiter.set_result(kept)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        check_compression(self.settings.compression)
        for name in missing_c_extensions():
            log.warning(
                "inference log: %s runs without its C extension; encoding and producing will "
                "be several times slower",
                name,
            )
        summarise_aiokafka_logs()
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.spool.open)
        self._persisted_id = self.spool.acked_id
        self._sender = KafkaSender(
            self.settings,
            self.spool,
            self.metrics,
            client_id=f"modelserving-sidecar-{self.pod}",
            tail_limit=max(self.settings.max_in_flight_records, _WRITE_BATCH),
            write_position=self._write_position,
            framing=self.framing,
        )
        if self.spool.recovered_ids:
            log.info(
                "inference log: %d records from a previous run are in the spool; replaying",
                self.spool.recovered_ids,
            )
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.accepting.set(1)
        self._syncer = SpoolSyncer(self.spool)
        self._syncer.start()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="inference-log-writer"),
            asyncio.create_task(self._sender.run(), name="inference-log-sender"),
            asyncio.create_task(self._housekeeping_loop(), name="inference-log-housekeeping"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        if self.framing is not None:
            self._framing_task = asyncio.create_task(
                self._frame_records(self.framing), name="inference-log-schema-id"
            )

    async def _frame_records(self, framing: RegistryFraming) -> None:
        """Records are framed with the schema id from the moment the registry gives it."""
        await framing.run()
        self._maker.frame_with(framing.schema_id)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A task of the pipeline ended: at close() as it should, else the pipeline is broken
        for good (each task is a loop that handles its own errors) and the sidecar must be
        restarted: `/healthz` fails from now on, and why is said once."""
        if self._closing or self._failure is not None:
            return
        error = None if task.cancelled() else task.exception()
        if error is None:
            self._failure = f"{task.get_name()} stopped"
        else:
            self._failure = f"{task.get_name()} failed: {type(error).__name__}: {error}"
        log.critical(
            "inference log: %s; /healthz fails from now on so that the sidecar is restarted "
            "(the spool keeps every record it was given)",
            self._failure,
            exc_info=error,
        )
        self.metrics.accepting.set(0)
        # Nothing will write what is queued: requests waiting for their record get a 503.
        self._release(self._made_total + len(self._queue) + 1, kept=False)

    async def close(self) -> None:
        """Spool what is queued, give Kafka until the drain timeout, keep the rest on disk."""
        self._closing = True
        sender = self.sender
        deadline = time.monotonic() + self.settings.drain_timeout_seconds
        while (
            (self._queue or self._writer_busy or self._held)
            and self._failure is None
            and time.monotonic() < deadline
        ):
            self._queued.set()
            await asyncio.sleep(0.01)
        while sender.acked_id < self.spool.next_id - 1 and time.monotonic() < deadline:
            if any(t.done() for t in self._tasks):
                break
            await asyncio.sleep(0.02)
        lost = len(self._queue) + len(self._held)
        self._release(self._made_total + len(self._queue) + 1, kept=False)
        if lost:
            self.metrics.dropped.labels("shutdown").inc(lost)
            log.error("inference log: %d records could not be spooled before exit", lost)
        tasks = [*self._tasks, *([self._framing_task] if self._framing_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.stop()
        if self._syncer is not None:
            await asyncio.to_thread(self._syncer.stop)
        await asyncio.to_thread(self._persist, sender.acked_id)
        await asyncio.to_thread(self.spool.close)
        waiting = self.spool.next_id - 1 - sender.acked_id
        if waiting:
            log.warning("inference log: %d records stay in the spool for the next start", waiting)

    # ----------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.spool_flush_interval_seconds
        make, costly, queue = self._maker.make, self._maker.costly, self._queue
        popleft, sleep = queue.popleft, asyncio.sleep
        while True:
            if not queue and not self._held:
                self._queued.clear()
                await self._queued.wait()
            # One write per flush interval at most: what arrives meanwhile joins the batch, so
            # a busy sidecar makes few large writes (and Kafka batches), an idle one writes at
            # once. Under durability spooled, requests wait for the write: it goes as soon as
            # the previous one is done, with every record that arrived meanwhile.
            wait = self._last_flush + interval - loop.time()
            if wait > 0 and not self._durable:
                await sleep(wait)
            self._writer_busy = True
            try:
                records = self._held
                made_before = self._made_total
                first = self._held_first if records else made_before + 1
                self._held = []
                made = 0
                while queue and len(records) < _WRITE_BATCH:
                    exchange = popleft()
                    try:
                        if costly(exchange):  # a large gRPC message's JSON: off the event loop
                            records.append(await asyncio.to_thread(make, exchange))
                        else:
                            records.append(make(exchange))
                    except Exception:  # a fault of ours: the record keeps its fields alone
                        log.exception("inference log: making a record failed")
                        records.append(self._maker.bare(exchange))
                    made += 1
                    if made % _ENCODE_SLICE == 0:
                        self._made_total = made_before + made
                        await sleep(0)  # let the request path run between slices
                self._made_total = made_before + made
                if made:
                    self.metrics.logged.inc(made)
                self._last_flush = loop.time()
                if records:
                    await self._append(records, first)
            finally:
                self._writer_busy = False

    async def _append(self, records: list[SpoolRecord], first: int) -> None:
        """Write the records of exchanges numbered from `first` on, and see to what did not fit."""
        spool = self.spool
        first_id = spool.next_id
        error: Exception | None = None
        try:
            count = spool.append(records)[1]
        except Exception as exc:  # a disk that fails: what was not written is seen to below
            error = exc
            count = spool.next_id - first_id  # whole frames written before it failed
        if count:
            self.sender.appended(first_id, records[:count] if count < len(records) else records)
            self.metrics.spooled.inc(count)
            if not spool.fsync_interval:  # 0: every write forced to disk before its answers
                try:
                    await asyncio.to_thread(spool.sync)
                except OSError as exc:  # written all the same: a kill loses none of it
                    log.error("inference log: forcing the spool to disk failed: %s", exc)
        if self._waiting:
            self._release(first + count, kept=True)
        rest = records[count:]
        if error is not None:
            log.error("inference log: writing to the spool failed: %s", error)
        if not rest:
            if self._spool_full:
                self._spool_full = False
                self.metrics.accepting.set(1)
                log.info("inference log: the spool has room again")
            return
        if self.settings.spool_full_policy is SpoolFullPolicy.DROP_NEWEST:
            self.metrics.dropped.labels("spool_full").inc(len(rest))
            self._release(first + len(records), kept=False)
            return
        if not self._spool_full:
            self._spool_full = True
            self.metrics.accepting.set(0)
            log.error("inference log: the spool is full; refusing predictions until it drains")
        self._held, self._held_first = rest, first + count
        # Room comes back only with Kafka's acks (or a disk that works again).
        self.sender.acked.clear()
        await wait_event(self.sender.acked, 1.0)

    # ----------------------------------------------------------------- housekeeping

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await self._housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inference log: housekeeping failed")

    async def _housekeeping(self) -> None:
        sender = self.sender
        if sender.acked_id != self._persisted_id:
            acked = sender.acked_id
            await asyncio.to_thread(self._persist, acked)
            self._persisted_id = acked
            sender.acked.set()
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.queued.set(len(self._queue))
        self.metrics.in_flight.set(sender.tracker.in_flight_records)
        if not self.waiting_records():
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = time.time()
        self.metrics.oldest_unacked_age.set(self.oldest_waiting_age())
        sender.check_credentials()
        await sender.check_stall()

    def _write_position(self, acked_id: int) -> None:
        """Acks moved: write the position (16 bytes to the page cache; the ledger follows on
        its interval, with the deletion of acknowledged segments)."""
        # A disk that fails costs duplicates after a kill (sent again from an older position),
        # never a record: the sender goes on as if it were written.
        with contextlib.suppress(OSError):
            self.spool.write_position(acked_id)
        self.sender.position_written(acked_id)

    def _persist(self, acked: int) -> None:
        self.spool.acknowledge(acked)
        self.spool.write_ledger()


@contextlib.asynccontextmanager
async def open_inference_log(
    config: SidecarConfig, registry: prometheus_client.CollectorRegistry
) -> AsyncIterator[InferenceLogSink]:
    """The inference log for the sidecar's lifetime (`logging.mode` other than NONE); on exit
    it drains within `logging.drainTimeoutSeconds` and leaves what Kafka has not acked in the
    spool. In a pod (POD_NAME, POD_NAMESPACE set) its health is published on the pod (see
    log_status)."""
    if config.logging.mode is LoggingMode.NONE:
        raise ValueError("the inference log is not opened when logging.mode is NONE")
    pipeline = InferenceLogPipeline(config, InferenceLogMetrics(registry))
    await pipeline.start()
    try:
        async with publishing_log_status(pipeline, config.auth.kubeconfig):
            yield pipeline
    finally:
        await pipeline.close()
