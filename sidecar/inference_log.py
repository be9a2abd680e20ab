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
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import prometheus_client

from modelserving.inferencelog import (
    HEADER_CALLER,
    HEADER_MODEL_VERSION,
    HEADER_PAYLOAD,
    HEADER_POD,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
    InferenceLogEncoder,
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
from modelserving.sidecar.spool import Spool, SpoolRecord, SpoolWriter, share_header

log = logging.getLogger(__name__)

_WRITE_BATCH = 5000  # exchanges encoded and spooled per write at most
# Exchanges shaped and encoded between two yields to the event loop: the writer shares the loop
# with the request path, and a batch of redacted JSON must not hold a request back for long.
_ENCODE_SLICE = 100
_READ_BATCH = 1000  # records read from the spool per thread hop
_HOUSEKEEPING_SECONDS = 0.25  # ledger, gauges and the stall check
_ACCEPT_HEADROOM = 0.9  # under `reject`, refuse before the queue is full: submits race accepting()
_PRODUCER_BATCH_BYTES = 256 * 1024  # per partition: 1 KB records in few requests
# A batch this big goes at once; a smaller one lingers (linger_ms) for more records to join it.
# The producer holds one batch per partition at a time, so a busy sidecar would otherwise wait
# a linger per run of records.
_LINGER_UNDER_BYTES = 64 * 1024
_MAX_REQUEST_BYTES = 1024 * 1024  # the producer's max_request_size (aiokafka's default)
_SIZE_CHECK_BYTES = 512 * 1024  # smaller values always fit: their size is not worked out
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


def _utf8(body: bytes) -> bytes:
    """The payload as the record's UTF-8 text: as it came when it is UTF-8 (the common case,
    checked without a copy kept), else with U+FFFD for the bad bytes, as `LogPolicy.shape`."""
    try:
        body.decode()
    except UnicodeDecodeError:
        return body.decode("utf-8", errors="replace").encode()
    return body


class SpoolRecordMaker:
    """`build_spool_record` for one serving, made for a batch at a time: what is the same for
    every record (model fields of the Avro value, the pod header, versions and callers seen)
    is encoded once, and a payload the policy leaves alone goes into the value as its bytes."""

    _CACHE_LIMIT = 1024

    def __init__(
        self,
        model: ModelIdentity,
        settings: LoggingConfig,
        pod: str,
        count_changes: Callable[[ShapedPayload, ShapedPayload], None] | None = None,
    ) -> None:
        self._policy = _policy_of(settings)
        self._plain = self._policy.leaves_payloads_alone
        self._keep_request = settings.mode is not LoggingMode.PREDICTIONS
        self._keep_response = settings.mode is not LoggingMode.MODEL_INPUTS
        self._encode = InferenceLogEncoder(
            model.model_id, model.name, settings.confluent_schema_id
        ).encode
        self._default_version = model.version
        self._pod = share_header((HEADER_POD, pod.encode()))
        self._versions: dict[int, tuple[str, bytes]] = {}
        self._callers: dict[str, tuple[str, bytes]] = {}
        self._count_changes = count_changes

    def _payloads(self, exchange: Exchange) -> tuple[bytes, bytes, str]:
        if self._plain:
            request = _utf8(exchange.request_body) if self._keep_request else b""
            response = _utf8(exchange.response_body) if self._keep_response else b""
            return request, response, ""
        policy = self._policy
        shaped_request = (
            policy.shape(exchange.request_body, Part.REQUEST) if self._keep_request else _ABSENT
        )
        shaped_response = (
            policy.shape(exchange.response_body, Part.RESPONSE) if self._keep_response else _ABSENT
        )
        changes = payload_header(shaped_request, shaped_response)
        if changes and self._count_changes is not None:
            self._count_changes(shaped_request, shaped_response)
        return shaped_request.text.encode(), shaped_response.text.encode(), changes

    def make(self, exchange: Exchange) -> SpoolRecord:
        """The spool record of one exchange: the same bytes `build_spool_record` gives."""
        request, response, changes = self._payloads(exchange)
        version = exchange.model_version
        if version is None:
            version = self._default_version
        request_id = exchange.request_id.encode()
        headers: list[tuple[str, bytes]] = [(HEADER_REQUEST_ID, request_id)]
        if exchange.traceparent:
            headers.append((HEADER_TRACEPARENT, exchange.traceparent.encode()))
        if caller := exchange.caller:
            header = self._callers.get(caller)
            if header is None:
                header = share_header((HEADER_CALLER, caller.encode()))
                if len(self._callers) >= self._CACHE_LIMIT:
                    self._callers.clear()
                self._callers[caller] = header
            headers.append(header)
        version_header = self._versions.get(version)
        if version_header is None:
            version_header = share_header((HEADER_MODEL_VERSION, str(version).encode()))
            if len(self._versions) >= self._CACHE_LIMIT:
                self._versions.clear()
            self._versions[version] = version_header
        headers.append(version_header)
        headers.append(self._pod)
        if changes:
            headers.append((HEADER_PAYLOAD, changes.encode()))
        received = exchange.received_ms
        value = self._encode(version, received, exchange.status, request, response)
        return SpoolRecord(request_id, tuple(headers), value, received)


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
            "From handing a batch of records to the producer to Kafka's ack, per batch",
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
        """Count one record and what redaction, the size limit and the non-JSON policy did."""
        self.logged.inc()
        self.count_changes(request, response)

    def count_changes(self, request: ShapedPayload, response: ShapedPayload) -> None:
        """Count what redaction, the size limit and the non-JSON policy did to one record."""
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
    """Records first..last handed to the producer (or known lost) whose acks are awaited: one
    per run of records sent together, done when every Kafka batch made of it is acked."""

    first: int
    last: int
    timestamp_ms: int  # the first record's
    sent_at: float
    batches: int = 0  # Kafka batches made of it and not yet acked
    sealed: bool = False  # every batch of it is handed to the producer
    done: bool = False

    @property
    def size(self) -> int:
        return self.last - self.first + 1


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
        self._maker = SpoolRecordMaker(config.model, self.settings, self.pod, metrics.count_changes)
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
        self._writer: SpoolWriter | None = None
        self._write_done: asyncio.Future | None = None
        self._last_flush = 0.0
        # Batches appended to the spool, kept for the sender so that it need not read them back
        # (bounded: what falls off is read from disk): (first id, records).
        self._tail: collections.deque[tuple[int, list[SpoolRecord]]] = collections.deque()
        self._tail_records = 0
        self._tail_limit = max(self.settings.max_in_flight_records, _WRITE_BATCH)
        self._written_next = 0  # the id after the last record appended
        self._next_send = 0  # the next id to hand to the producer
        self._disk_next: int | None = None  # where the spool's reader stands (None: to seek)
        self._inflight: collections.deque[_Pending] = collections.deque()
        self._inflight_records = 0
        self._last_registered = 0
        self._acked_id = 0
        self._persisted_id = 0
        self._sent_high = 0  # highest id ever sent: ids at or under it are replays
        self._generation = 0
        self._rewind_reason: str | None = None
        self._last_progress = time.monotonic()
        self._producer = None
        self._partitions: list[int] = []
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
        self._written_next = self.spool.next_id
        self._next_send = self._acked_id + 1
        if self.spool.recovered_ids:
            log.info(
                "inference log: %d records from a previous run are in the spool; replaying",
                self.spool.recovered_ids,
            )
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.accepting.set(1)
        loop = asyncio.get_running_loop()

        def appended(records, first_id, count, error) -> None:  # in the writer thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._appended, records, first_id, count, error)

        self._writer = SpoolWriter(self.spool, appended)
        self._writer.start()
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
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._persist, self._acked_id)
        await asyncio.to_thread(self.spool.close)
        waiting = self.spool.next_id - 1 - self._acked_id
        if waiting:
            log.warning("inference log: %d records stay in the spool for the next start", waiting)

    # ----------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.spool_flush_interval_seconds
        make, queue = self._maker.make, self._queue
        popleft, sleep = queue.popleft, asyncio.sleep
        while True:
            if not queue and not self._held:
                self._queued.clear()
                await self._queued.wait()
            # One write per flush interval at most: what arrives meanwhile joins the batch, so
            # a busy sidecar makes few large writes (and Kafka batches), an idle one writes at
            # once.
            wait = self._last_flush + interval - loop.time()
            if wait > 0:
                await sleep(wait)
            self._writer_busy = True
            try:
                records = self._held
                self._held = []
                made = 0
                while queue and len(records) < _WRITE_BATCH:
                    records.append(make(popleft()))
                    made += 1
                    if made % _ENCODE_SLICE == 0:
                        await sleep(0)  # let the request path run between slices
                if made:
                    self.metrics.logged.inc(made)
                self._last_flush = loop.time()
                if records:
                    await self._append(records)
            finally:
                self._writer_busy = False

    def _appended(
        self,
        records: list[SpoolRecord],
        first_id: int,
        count: int,
        error: BaseException | None,
    ) -> None:
        """A batch the writer thread appended (on the loop)."""
        if count:
            self._written_next = first_id + count
            self._tail.append((first_id, records[:count] if count < len(records) else records))
            self._tail_records += count
            while self._tail_records > self._tail_limit and len(self._tail) > 1:
                _, dropped = self._tail.popleft()  # still on disk: read from there if needed
                self._tail_records -= len(dropped)
            self.metrics.spooled.inc(count)
            self._spooled.set()
        done = self._write_done
        if done is not None and not done.done():
            done.set_result((count, error))

    async def _append(self, records: list[SpoolRecord]) -> None:
        assert self._writer is not None
        self._write_done = asyncio.get_running_loop().create_future()
        self._writer.append(records)
        count, error = await self._write_done
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
            return
        if not self._spool_full:
            self._spool_full = True
            self.metrics.accepting.set(0)
            log.error("inference log: the spool is full; refusing predictions until it drains")
        self._held = rest
        # Room comes back only with Kafka's acks (or a disk that works again).
        self._acked.clear()
        await _wait(self._acked, 1.0)

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
            self._partitions = sorted(await producer.partitions_for(settings.topic))
        except BaseException:
            await producer.stop()
            raise
        self._last_progress = time.monotonic()
        return producer

    async def _send_some(self) -> None:
        if self._rewind_reason is not None:
            raise _RewindNeeded(self._rewind_reason)
        room = self.settings.max_in_flight_records - self._inflight_records
        if room <= 0:
            self._acked.clear()
            await _wait(self._acked, _HOUSEKEEPING_SECONDS)
            return
        self._spooled.clear()
        run = self._from_memory(room)
        if run is None and self._next_send < self._written_next:
            run = await self._from_disk(room)
        if run is None:
            await _wait(self._spooled, _HOUSEKEEPING_SECONDS)
            return
        for first, records in run:
            await self._produce(first, records)

    def _from_memory(self, room: int) -> list[tuple[int, list[SpoolRecord]]] | None:
        """The records from the next id on, when the tail of appended batches has them."""
        tail, start = self._tail, self._next_send
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

    async def _from_disk(self, room: int) -> list[tuple[int, list[SpoolRecord]]] | None:
        """The records from the next id on, read back from the spool (after a restart, or
        when the sender fell behind the tail kept in memory): runs of consecutive ids."""
        start = self._next_send
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
        runs: list[tuple[int, list[SpoolRecord]]] = []
        for spooled in result.records:
            if spooled.id < self._next_send:
                continue
            if runs and runs[-1][0] + len(runs[-1][1]) == spooled.id:
                runs[-1][1].append(spooled.record)
            else:
                runs.append((spooled.id, [spooled.record]))
        return runs or None

    def _register(self, first: int, records: list[SpoolRecord]) -> _Pending:
        if first > self._last_registered + 1:
            # Ids lost to corruption on disk: nothing to wait for (counted when read).
            gap = _Pending(self._last_registered + 1, first - 1, records[0].timestamp_ms, 0.0)
            gap.done = True
            self._inflight.append(gap)
            self._inflight_records += gap.size
        last = first + len(records) - 1
        pending = _Pending(first, last, records[0].timestamp_ms, time.monotonic())
        self._inflight.append(pending)
        self._inflight_records += pending.size
        self._last_registered = last
        self._next_send = last + 1
        if first <= self._sent_high:
            self.metrics.replayed.inc(min(last, self._sent_high) - first + 1)
        self._sent_high = max(self._sent_high, last)
        return pending

    async def _produce(self, first: int, records: list[SpoolRecord]) -> None:
        """Hand a run of records to the producer as few Kafka batches as fit, one per partition
        (partitioned by key as Kafka's Java client does), with one pending ack for the run."""
        if self._rewind_reason is not None:
            raise _RewindNeeded(self._rewind_reason)
        pending = self._register(first, records)
        if self._skip:
            skip = self._skip
            records = [r for i, r in enumerate(records, first) if i not in skip]
            if self._next_send > max(skip):
                skip.clear()
        partitions = self._partitions
        if len(partitions) == 1 or not records:
            groups = [(partitions[0] if partitions else 0, records)]
        else:
            by_partition: dict[int, list[SpoolRecord]] = {}
            for record in records:
                partition = _partition_of(record.key, partitions)
                by_partition.setdefault(partition, []).append(record)
            groups = list(by_partition.items())
        producer = self._producer
        max_size = _MAX_REQUEST_BYTES
        for partition, group in groups:
            batch, count = producer.create_batch(), 0
            for record in group:
                value = record.value
                if len(value) > _SIZE_CHECK_BYTES and _record_size(record) > max_size:
                    self.metrics.dropped.labels("too_large").inc()
                    log.error(
                        "inference log: a record of %d bytes is too large for Kafka; dropped",
                        len(value),
                    )
                    continue
                key, headers, ts = record.key, list(record.headers), record.timestamp_ms
                if batch.append(timestamp=ts, key=key, value=value, headers=headers) is None:
                    await self._send_batch(batch, partition, count, pending)
                    batch, count = producer.create_batch(), 0
                    batch.append(timestamp=ts, key=key, value=value, headers=headers)
                count += 1
            if count:
                if batch.size() >= _LINGER_UNDER_BYTES:
                    batch.close()  # big enough: sent at once, no linger waiting for more
                await self._send_batch(batch, partition, count, pending)
        pending.sealed = True
        if not pending.batches:
            self._done(pending)

    async def _send_batch(self, batch, partition: int, count: int, pending: _Pending) -> None:
        pending.batches += 1
        generation = self._generation
        future = await self._producer.send_batch(batch, self.settings.topic, partition=partition)
        future.add_done_callback(functools.partial(self._delivered, pending, generation, count))

    def _delivered(
        self, pending: _Pending, generation: int, count: int, future: asyncio.Future
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            if generation == self._generation and self._rewind_reason is None:
                exc = future.exception() if not future.cancelled() else None
                self._rewind_reason = type(exc).__name__ if exc else "cancelled"
                self._spooled.set()
                self._acked.set()
            return
        if generation != self._generation or pending.done:
            return  # a producer since replaced: its records are sent again
        self.metrics.produced.inc(count)
        pending.batches -= 1
        if pending.sealed and not pending.batches:
            self.metrics.send_latency.observe(time.monotonic() - pending.sent_at)
            self._done(pending)

    def _done(self, pending: _Pending) -> None:
        pending.done = True
        self._last_progress = time.monotonic()
        inflight = self._inflight
        while inflight and inflight[0].done:
            head = inflight.popleft()
            self._acked_id = head.last
            self._inflight_records -= head.size
        # Acknowledged batches are never sent again: the sender's walk of the tail stays short.
        tail, acked = self._tail, self._acked_id
        while tail and tail[0][0] + len(tail[0][1]) - 1 <= acked:
            self._tail_records -= len(tail.popleft()[1])
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
        self._skip = {i for p in self._inflight if p.done for i in range(p.first, p.last + 1)}
        self._inflight.clear()
        self._inflight_records = 0
        self._last_registered = self._acked_id
        self._next_send = self._acked_id + 1
        self._disk_next = None
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
        self.metrics.spool_bytes.set(self.spool.size_bytes)
        self.metrics.queued.set(len(self._queue))
        self.metrics.in_flight.set(self._inflight_records)
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


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until the event is set or `seconds` have passed (wait_for would make a task per call)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _record_size(record: SpoolRecord) -> int:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    return DefaultRecordBatchBuilder.estimate_size_in_bytes(
        record.key, record.value, list(record.headers)
    )


def _partition_of(key: bytes | None, partitions: list[int]) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2, as the Java client
    and aiokafka do)."""
    if key is None:
        return random.choice(partitions)
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, the same as aiokafka.partitioner.murmur2 (words unpacked at
    once: it runs per record on multi-partition topics)."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = 0x9747B28C ^ length
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    tail = words * 4
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


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
