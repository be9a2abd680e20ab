"""The inference log pipeline: exchanges from the request path become `inferencelog` records,
written ahead to the disk spool, then produced to Kafka; Kafka's acks free the spool.

`submit()` decides inline whether the exchange is logged at all (the mode and the sampling
rates, a hash of the request id: see `log_policy`) and only appends to a bounded deque. A writer
task redacts and cuts the payloads, encodes what is queued and appends it to the spool (in a
thread); a sender task reads the spool in order and hands records to an
idempotent `acks=all` aiokafka producer, at most `maxInFlightRecords` unacked at a time. A
failed or stalled send makes the sender drop its producer, make a new one, and send again from
the oldest unacked record, so an outage or a wedged producer costs duplicates at worst, never
a record. What cannot be kept (spool full under `dropNewest`, a record larger than Kafka takes,
corruption on disk) is counted in `modelserving_inference_log_records_dropped_total`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import prometheus_client

from modelserving.inferencelog import (
    HEADER_CALLER,
    HEADER_MODEL_VERSION,
    HEADER_PAYLOAD,
    HEADER_POD,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    InferenceLogRecord,
    encode_record,
)
from modelserving.sidecar.config import (
    ConfigError,
    LogCompression,
    LoggingConfig,
    LoggingMode,
    ModelIdentity,
    SidecarConfig,
    SpoolFullPolicy,
)
from modelserving.sidecar.exchange import Exchange, InferenceLogSink
from modelserving.sidecar.log_policy import LogPolicy, OversizePolicy, Part, ShapedPayload
from modelserving.sidecar.spool import Spool, SpoolRecord

log = logging.getLogger(__name__)

_WRITE_BATCH = 2000  # exchanges encoded and spooled per thread hop
# Exchanges shaped and encoded between two yields to the event loop: the writer shares the loop
# with the request path, and a batch of redacted JSON must not hold a request back for long.
_ENCODE_SLICE = 100
_READ_BATCH = 1000  # records read from the spool per thread hop
_HOUSEKEEPING_SECONDS = 0.25  # ledger, gauges and the stall check
_ACCEPT_HEADROOM = 0.9  # under `reject`, refuse before the queue is full: submits race accepting()
_PRODUCER_BATCH_BYTES = 256 * 1024  # per partition: 1 KB records in few requests
_RETRY_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
_AIOKAFKA_LOGGERS = (
    "aiokafka",
    "aiokafka.client",
    "aiokafka.conn",
    "aiokafka.cluster",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
)


# --------------------------------------------------------------------------- pure parts


_PLAIN = LogPolicy()  # no rules, no limit: payloads as they came
_ABSENT = ShapedPayload("")  # the payload a mode leaves out


@functools.cache
def _policy_of(settings: LoggingConfig) -> LogPolicy:
    return settings.policy()


def shape_exchange(
    exchange: Exchange, mode: LoggingMode, policy: LogPolicy = _PLAIN
) -> tuple[ShapedPayload, ShapedPayload]:
    """The request and response texts a mode keeps, redacted and cut by the policy."""
    request = (
        _ABSENT
        if mode is LoggingMode.PREDICTIONS
        else policy.shape(exchange.request_body, Part.REQUEST)
    )
    response = (
        _ABSENT
        if mode is LoggingMode.MODEL_INPUTS
        else policy.shape(exchange.response_body, Part.RESPONSE)
    )
    return request, response


def build_record(
    exchange: Exchange,
    model: ModelIdentity,
    mode: LoggingMode,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> InferenceLogRecord | None:
    """The `inferencelog` record of one exchange under a logging mode (None: not logged).

    `shaped` is what `shape_exchange` made of the payloads; without it they go as they came."""
    if mode is LoggingMode.NONE:
        return None
    request, response = shaped or shape_exchange(exchange, mode)
    return InferenceLogRecord(
        model_id=model.model_id,
        model_name=model.name,
        model_version=exchange.model_version
        if exchange.model_version is not None
        else model.version,
        request_timestamp=exchange.received_ms,
        response_http_code=exchange.status,
        inference_request=request.text,
        inference_response=response.text,
    )


def payload_header(request: ShapedPayload, response: ShapedPayload) -> str:
    """The `payload` header's value: what was done to which payload, e.g.
    `request=redacted+cut,response=digest`; empty when both went as they came."""
    parts = []
    for name, shaped in (("request", request), ("response", response)):
        marks = shaped.marks()
        if marks:
            parts.append(f"{name}={'+'.join(marks)}")
    return ",".join(parts)


def build_headers(
    exchange: Exchange,
    model_version: int,
    pod: str,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> tuple[tuple[str, bytes], ...]:
    """The Kafka headers of one exchange's record; absent facts give no header."""
    headers = [(HEADER_REQUEST_ID, exchange.request_id.encode())]
    if exchange.traceparent:
        headers.append((HEADER_TRACEPARENT, exchange.traceparent.encode()))
    if exchange.caller:
        headers.append((HEADER_CALLER, exchange.caller.encode()))
    headers.append((HEADER_MODEL_VERSION, str(model_version).encode()))
    headers.append((HEADER_POD, pod.encode()))
    if shaped is not None and (changes := payload_header(*shaped)):
        headers.append((HEADER_PAYLOAD, changes.encode()))
    return tuple(headers)


def build_spool_record(
    exchange: Exchange,
    model: ModelIdentity,
    logging_config: LoggingConfig,
    pod: str,
    shaped: tuple[ShapedPayload, ShapedPayload] | None = None,
) -> SpoolRecord | None:
    """What goes to the spool and Kafka for one exchange: key, headers and Avro value, the
    payloads redacted and cut by the settings' policy (or as `shaped` already made them)."""
    if logging_config.mode is LoggingMode.NONE:
        return None
    if shaped is None:
        shaped = shape_exchange(exchange, logging_config.mode, _policy_of(logging_config))
    record = build_record(exchange, model, logging_config.mode, shaped)
    assert record is not None
    return SpoolRecord(
        key=exchange.request_id.encode(),
        headers=build_headers(exchange, record.model_version, pod, shaped),
        value=encode_record(record, logging_config.confluent_schema_id),
        timestamp_ms=exchange.received_ms,
    )


def pod_name() -> str:
    """The pod's name (the Deployment sets POD_NAME; a pod's hostname is its name too)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def missing_c_extensions() -> list[str]:
    """The libraries whose C extensions are not in use (the pure-Python ones are much slower)."""
    import fastavro
    from aiokafka.record import default_records

    missing = []
    if "_crecords" not in default_records.DefaultRecordBatchBuilder.__module__:
        missing.append("aiokafka")
    if fastavro.schemaless_writer.__module__ != "fastavro._write":
        missing.append("fastavro")
    return missing


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


class RepeatedLogFilter(logging.Filter):
    """Lets the first of a run of identical log lines through, then one per window with a count.

    aiokafka logs a failed connect and a metadata error every ~100 ms while a broker is down.
    """

    def __init__(self, window_seconds: float = 30.0) -> None:
        super().__init__()
        self.window = window_seconds
        self._seen: dict[tuple[str, object], tuple[float | None, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        first, suppressed = self._seen.get(key, (None, 0))
        if first is not None and now - first < self.window:
            self._seen[key] = (first, suppressed + 1)
            return False
        self._seen[key] = (now, 0)
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more like this in the last window)"
            record.args = None
        if len(self._seen) > 1000:
            self._seen.clear()
        return True


def summarise_aiokafka_logs() -> None:
    """Put one RepeatedLogFilter on aiokafka's loggers (once per process)."""
    for name in _AIOKAFKA_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatedLogFilter) for f in logger.filters):
            logger.addFilter(RepeatedLogFilter())


# --------------------------------------------------------------------------- metrics


_OUTCOMES = ("success", "error")  # 2xx answers, and the others


class _SubmitCounts:
    """Counters of the request path kept as plain ints (a Prometheus Counter takes a lock per
    increment) and read when /metrics is scraped."""

    def __init__(self) -> None:
        self.seen = [0, 0]  # by outcome index: success, error
        self.sampled_out = [0, 0]

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        prefix = "modelserving_inference_log"
        seen = CounterMetricFamily(
            f"{prefix}_requests_seen",
            "Answered requests the inference log was offered, by outcome (success: 2xx)",
            labels=["outcome"],
        )
        out = CounterMetricFamily(
            f"{prefix}_requests_sampled_out",
            "Requests not logged by the sampling rates (or by mode ERRORS for 2xx), by outcome",
            labels=["outcome"],
        )
        for i, outcome in enumerate(_OUTCOMES):
            seen.add_metric([outcome], self.seen[i])
            out.add_metric([outcome], self.sampled_out[i])
        yield seen
        yield out


class InferenceLogMetrics:
    """The pipeline's Prometheus metrics, in the registry the sidecar exposes."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        prefix = "modelserving_inference_log"
        c, g = prometheus_client.Counter, prometheus_client.Gauge
        self.counts = _SubmitCounts()
        registry.register(self.counts)
        self.logged = c(
            f"{prefix}_records_logged",
            "Records made of sampled requests (before the spool and Kafka)",
            registry=registry,
        )
        self.payloads_redacted = c(
            f"{prefix}_payloads_redacted",
            "Payloads changed by redaction rules, by part (request, response)",
            ["part"],
            registry=registry,
        )
        self.payloads_cut = c(
            f"{prefix}_payloads_cut",
            "Payloads over maxPayloadBytes, by part and how (truncate, digest)",
            ["part", "how"],
            registry=registry,
        )
        self.payloads_dropped = c(
            f"{prefix}_payloads_dropped",
            "Payloads left out of the record because they are not JSON, by part",
            ["part"],
            registry=registry,
        )
        self.spooled = c(
            f"{prefix}_records_spooled", "Records written to the disk spool", registry=registry
        )
        self.produced = c(
            f"{prefix}_records_produced", "Records acknowledged by Kafka", registry=registry
        )
        self.replayed = c(
            f"{prefix}_records_replayed",
            "Records sent again from the spool after a restart or a failed send",
            registry=registry,
        )
        self.dropped = c(
            f"{prefix}_records_dropped",
            "Records that will never reach Kafka, by reason",
            ["reason"],
            registry=registry,
        )
        self.producer_restarts = c(
            f"{prefix}_producer_restarts",
            "Kafka producers replaced, by reason",
            ["reason"],
            registry=registry,
        )
        self.spool_bytes = g(f"{prefix}_spool_bytes", "Bytes in the disk spool", registry=registry)
        self.queued = g(
            f"{prefix}_queued_exchanges", "Exchanges waiting in memory", registry=registry
        )
        self.in_flight = g(
            f"{prefix}_in_flight_records", "Records sent and not yet acked", registry=registry
        )
        self.oldest_unacked_age = g(
            f"{prefix}_oldest_unacked_age_seconds",
            "Age of the oldest record not yet acknowledged by Kafka (0 when none)",
            registry=registry,
        )
        self.accepting = g(
            f"{prefix}_accepting",
            "1 when predictions are accepted, 0 when the spool is full under the reject policy",
            registry=registry,
        )
        self.send_latency = prometheus_client.Histogram(
            f"{prefix}_send_latency_seconds",
            "From handing a record to the producer to Kafka's ack",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        for reason in ("spool_full", "queue_full", "too_large", "corrupt", "shutdown"):
            self.dropped.labels(reason)
        self._part_counters = {
            part: (
                self.payloads_redacted.labels(part),
                self.payloads_cut.labels(part, "truncate"),
                self.payloads_cut.labels(part, "digest"),
                self.payloads_dropped.labels(part),
            )
            for part in ("request", "response")
        }

    def count_shaped(self, request: ShapedPayload, response: ShapedPayload) -> None:
        """Count what redaction, the size limit and the non-JSON policy did to one record."""
        self.logged.inc()
        for part, shaped in (("request", request), ("response", response)):
            if not (shaped.redacted or shaped.cut or shaped.dropped):
                continue
            redacted, truncated, digested, dropped = self._part_counters[part]
            if shaped.redacted:
                redacted.inc()
            if shaped.cut is OversizePolicy.TRUNCATE:
                truncated.inc()
            elif shaped.cut is OversizePolicy.DIGEST:
                digested.inc()
            if shaped.dropped:
                dropped.inc()


# --------------------------------------------------------------------------- the pipeline


@dataclass(slots=True)
class _Pending:
    """One record handed to the producer (or known lost) whose ack is awaited."""

    id: int
    timestamp_ms: int
    sent_at: float
    done: bool = False


class _RewindNeeded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DisabledInferenceLog:
    """The sink when logging is off (mode NONE): accepts everything, keeps nothing."""

    def accepting(self) -> bool:
        return True

    def submit(self, exchange: Exchange) -> None:
        return None


class InferenceLogPipeline:
    """The log as the request path sees it (`InferenceLogSink`), and the tasks behind it."""

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
        self.policy = _policy_of(self.settings)
        self._counts = metrics.counts
        self._queue: collections.deque[Exchange] = collections.deque()
        self._queue_size = self.settings.queue_size
        rejecting = self.settings.spool_full_policy is SpoolFullPolicy.REJECT
        self._accept_limit = (
            int(self._queue_size * _ACCEPT_HEADROOM) if rejecting else self._queue_size + 1
        )
        self._spool_full = False  # under reject: records wait for room, predictions get 503
        self._held: list[SpoolRecord] = []  # encoded, waiting for spool room (reject)
        self._queued = asyncio.Event()
        self._spooled = asyncio.Event()
        self._acked = asyncio.Event()
        self._inflight: collections.deque[_Pending] = collections.deque()
        self._last_registered = 0
        self._acked_id = 0
        self._persisted_id = 0
        self._sent_high = 0  # highest id ever sent: ids at or under it are replays
        self._generation = 0
        self._rewind_reason: str | None = None
        self._last_progress = time.monotonic()
        self._producer = None
        self._tasks: list[asyncio.Task] = []
        self._writer_busy = False
        self._skip: set[int] = set()
        self._waiting_since: float | None = None  # wall time records began to wait unsent

    # ----------------------------------------------------------------- the sink

    def accepting(self) -> bool:
        return not self._spool_full and len(self._queue) < self._accept_limit

    def waiting_records(self) -> int:
        """Records in the spool that Kafka has not acknowledged yet."""
        return max(0, self.spool.next_id - 1 - self._acked_id)

    def oldest_waiting_age(self) -> float:
        """Seconds the oldest unacknowledged record has waited: its own timestamp when it is
        in flight, else (no producer, records only on disk) since records began to wait."""
        now = time.time()
        oldest = next((p for p in self._inflight if not p.done), None)
        if oldest is not None:
            return max(0.0, now - oldest.timestamp_ms / 1000)
        if self._waiting_since is not None and self.waiting_records():
            return max(0.0, now - self._waiting_since)
        return 0.0

    def submit(self, exchange: Exchange) -> None:
        try:
            outcome = 0 if 200 <= exchange.status < 300 else 1
            counts = self._counts
            counts.seen[outcome] += 1
            if not self.policy.sampled(exchange.request_id, exchange.status):
                counts.sampled_out[outcome] += 1
                return
            if len(self._queue) >= self._queue_size:
                self.metrics.dropped.labels("queue_full").inc()
                return
            self._queue.append(exchange)
            if not self._queued.is_set():
                self._queued.set()
        except Exception:  # the request path must never see the log fail
            log.exception("inference log: submit failed")

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
        await asyncio.to_thread(self.spool.open)
        self._acked_id = self._persisted_id = self._last_registered = self.spool.acked_id
        self._sent_high = self.spool.next_id - 1
        if self.spool.recovered_ids:
            log.info(
                "inference log: %d records from a previous run are in the spool; replaying",
                self.spool.recovered_ids,
            )
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.accepting.set(1)
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="inference-log-writer"),
            asyncio.create_task(self._send_loop(), name="inference-log-sender"),
            asyncio.create_task(self._housekeeping_loop(), name="inference-log-housekeeping"),
        ]

    async def close(self) -> None:
        """Spool what is queued, give Kafka until the drain timeout, keep the rest on disk."""
        deadline = time.monotonic() + self.settings.drain_timeout_seconds
        while (self._queue or self._writer_busy or self._held) and time.monotonic() < deadline:
            self._queued.set()
            await asyncio.sleep(0.01)
        while self._acked_id < self.spool.next_id - 1 and time.monotonic() < deadline:
            if any(t.done() for t in self._tasks):
                break
            await asyncio.sleep(0.02)
        lost = len(self._queue) + len(self._held)
        if lost:
            self.metrics.dropped.labels("shutdown").inc(lost)
            log.error("inference log: %d records could not be spooled before exit", lost)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._drop_producer()
        await asyncio.to_thread(self._persist, self._acked_id)
        await asyncio.to_thread(self.spool.close)
        waiting = self.spool.next_id - 1 - self._acked_id
        if waiting:
            log.warning("inference log: %d records stay in the spool for the next start", waiting)

    # ----------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        model, settings, pod, policy = self.config.model, self.settings, self.pod, self.policy
        mode, count_shaped = settings.mode, self.metrics.count_shaped
        while True:
            if not self._queue and not self._held:
                self._queued.clear()
                await self._queued.wait()
            self._writer_busy = True
            try:
                records = self._held
                self._held = []
                encoded = 0
                while self._queue and len(records) < _WRITE_BATCH:
                    exchange = self._queue.popleft()
                    shaped = shape_exchange(exchange, mode, policy)
                    record = build_spool_record(exchange, model, settings, pod, shaped)
                    if record is not None:
                        count_shaped(*shaped)
                        records.append(record)
                    encoded += 1
                    if encoded % _ENCODE_SLICE == 0:
                        await asyncio.sleep(0)  # let the request path run between slices
                self.metrics.queued.set(len(self._queue))
                if records:
                    await self._append(records)
            finally:
                self._writer_busy = False

    async def _append(self, records: list[SpoolRecord]) -> None:
        _, count = await asyncio.to_thread(self.spool.append, records)
        if count:
            self.metrics.spooled.inc(count)
            self._spooled.set()
        rest = records[count:]
        if not rest:
            if self._spool_full:
                self._spool_full = False
                self.metrics.accepting.set(1)
                log.info("inference log: the spool has room again")
            return
        if self.settings.spool_full_policy is SpoolFullPolicy.DROP_NEWEST:
            self.metrics.dropped.labels("spool_full").inc(len(rest))
            return
        if not self._spool_full:
            self._spool_full = True
            self.metrics.accepting.set(0)
            log.error("inference log: the spool is full; refusing predictions until it drains")
        self._held = rest
        # Room comes back only with Kafka's acks.
        self._acked.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acked.wait(), timeout=1.0)

    # ----------------------------------------------------------------- sender

    async def _send_loop(self) -> None:
        failures = 0
        while True:
            try:
                if self._producer is None:
                    self._producer = await self._new_producer()
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

    async def _new_producer(self):
        from aiokafka import AIOKafkaProducer

        settings = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=settings.linger_ms,
            compression_type=None
            if settings.compression is LogCompression.NONE
            else str(settings.compression),
            max_batch_size=_PRODUCER_BATCH_BYTES,
            request_timeout_ms=int(settings.send_timeout_seconds * 1000),
            client_id=f"modelserving-sidecar-{self.pod}",
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._last_progress = time.monotonic()
        return producer

    async def _send_some(self) -> None:
        room = self.settings.max_in_flight_records - len(self._inflight)
        if self._rewind_reason is not None:
            raise _RewindNeeded(self._rewind_reason)
        if room <= 0:
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), timeout=_HOUSEKEEPING_SECONDS)
            return
        self._spooled.clear()
        result = await asyncio.to_thread(self.spool.read, min(room, _READ_BATCH))
        if result.corrupt or result.missing_ids:
            self.metrics.dropped.labels("corrupt").inc(result.missing_ids)
            log.error(
                "inference log: %d corrupt stretches in the spool skipped (%d records lost)",
                result.corrupt,
                result.missing_ids,
            )
        if not result.records:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), timeout=_HOUSEKEEPING_SECONDS)
            return
        from aiokafka.errors import MessageSizeTooLargeError

        producer, topic, generation = self._producer, self.settings.topic, self._generation
        for spooled in result.records:
            if self._rewind_reason is not None:
                raise _RewindNeeded(self._rewind_reason)
            record = spooled.record
            pending = self._register(spooled.id, record.timestamp_ms)
            if spooled.id in self._skip:
                self._skip.discard(spooled.id)
                self._done(pending)
                continue
            if spooled.id <= self._sent_high:
                self.metrics.replayed.inc()
            else:
                self._sent_high = spooled.id
            try:
                future = await producer.send(
                    topic,
                    record.value,
                    key=record.key,
                    headers=list(record.headers),
                    timestamp_ms=record.timestamp_ms,
                )
            except MessageSizeTooLargeError:
                self.metrics.dropped.labels("too_large").inc()
                log.error(
                    "inference log: a record of %d bytes is too large for Kafka; dropped",
                    len(record.value),
                )
                self._done(pending)
                continue
            future.add_done_callback(functools.partial(self._delivered, pending, generation))

    def _register(self, record_id: int, timestamp_ms: int) -> _Pending:
        if record_id > self._last_registered + 1:
            # Ids lost to corruption on disk: nothing to wait for (counted when read).
            self._inflight.append(_Pending(record_id - 1, timestamp_ms, 0.0, done=True))
        pending = _Pending(record_id, timestamp_ms, time.monotonic())
        self._inflight.append(pending)
        self._last_registered = record_id
        return pending

    def _delivered(self, pending: _Pending, generation: int, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            if generation == self._generation and self._rewind_reason is None:
                exc = future.exception() if not future.cancelled() else None
                self._rewind_reason = type(exc).__name__ if exc else "cancelled"
                self._spooled.set()
                self._acked.set()
            return
        if pending.done:
            return
        self.metrics.produced.inc()
        self.metrics.send_latency.observe(time.monotonic() - pending.sent_at)
        self._done(pending)

    def _done(self, pending: _Pending) -> None:
        pending.done = True
        self._last_progress = time.monotonic()
        inflight = self._inflight
        while inflight and inflight[0].done:
            self._acked_id = inflight.popleft().id
        self._acked.set()

    async def _rewind(self, reason: str) -> None:
        """New producer; send again everything not acked, from the oldest, skipping acked ones."""
        self._generation += 1
        self.metrics.producer_restarts.labels(reason).inc()
        log.warning(
            "inference log: replacing the Kafka producer (%s); resending from record %d",
            reason,
            self._acked_id + 1,
        )
        await self._drop_producer()
        # Acked out of order (other partitions) before the failure: not to be sent again.
        self._skip = {p.id for p in self._inflight if p.done}
        self._inflight.clear()
        self._last_registered = self._acked_id
        self.spool.seek(self._acked_id + 1)
        self._rewind_reason = None
        self._last_progress = time.monotonic()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # aiokafka's stop() waits for every pending batch, which with the broker down never
        # comes: fail them first (they will be sent again from the spool).
        from aiokafka.errors import KafkaTimeoutError

        producer._message_accumulator.fail_all(KafkaTimeoutError("producer replaced"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=5)

    # ----------------------------------------------------------------- housekeeping

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(_HOUSEKEEPING_SECONDS)
            try:
                await self._housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("inference log: housekeeping failed")

    async def _housekeeping(self) -> None:
        if self._acked_id != self._persisted_id:
            acked = self._acked_id
            await asyncio.to_thread(self._persist, acked)
            self._persisted_id = acked
            self._acked.set()
        await asyncio.to_thread(self.spool.sync_if_due)
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.queued.set(len(self._queue))
        self.metrics.in_flight.set(len(self._inflight))
        if not self.waiting_records():
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = time.time()
        self.metrics.oldest_unacked_age.set(self.oldest_waiting_age())
        await self._check_stall()

    def _persist(self, acked: int) -> None:
        self.spool.acknowledge(acked)
        self.spool.write_ledger()

    async def _check_stall(self) -> None:
        waiting = any(not p.done for p in self._inflight)
        stalled_for = time.monotonic() - self._last_progress
        if not waiting or stalled_for < self.settings.producer_stall_seconds:
            return
        if await broker_reachable(self.settings.bootstrap_servers):
            if self._rewind_reason is None:
                self._rewind_reason = "stalled"
                self._spooled.set()
                self._acked.set()
        else:
            log.warning(
                "inference log: Kafka unreachable for %.0f s; %d records wait in the spool",
                stalled_for,
                self.spool.next_id - 1 - self._acked_id,
            )
            self._last_progress = time.monotonic()  # warn once per stall period


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


@contextlib.asynccontextmanager
async def open_inference_log(
    config: SidecarConfig, registry: prometheus_client.CollectorRegistry
) -> AsyncIterator[InferenceLogSink]:
    """The inference log for the sidecar's lifetime; on exit it drains within
    `logging.drainTimeoutSeconds` and leaves what Kafka has not acked in the spool. In a pod
    (POD_NAME, POD_NAMESPACE set) its health is published on the pod (see log_status)."""
    if config.logging.mode is LoggingMode.NONE:
        yield DisabledInferenceLog()
        return
    from modelserving.sidecar.log_status import publishing_log_status

    pipeline = InferenceLogPipeline(config, InferenceLogMetrics(registry))
    await pipeline.start()
    try:
        async with publishing_log_status(pipeline, config.auth.kubeconfig):
            yield pipeline
    finally:
        await pipeline.close()
