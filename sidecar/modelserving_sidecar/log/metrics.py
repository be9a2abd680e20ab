"""The inference log's Prometheus metrics: what was offered, sampled, shaped, spooled, fsynced,
produced and dropped, and the gauges of the spool and the producer."""

from __future__ import annotations

from collections.abc import Iterator

import prometheus_client
from prometheus_client.core import CounterMetricFamily

from modelserving_sidecar.log.policy import OversizePolicy, ShapedPayload
from modelserving_sidecar.log.spool.segments import Spool

_OUTCOMES = ("success", "error")  # 2xx answers, and the others


class _SubmitCounts:
    """Counters of the request path kept as plain ints (a Prometheus Counter takes a lock per
    increment) and read when /metrics is scraped."""

    def __init__(self) -> None:
        self.seen = [0, 0]  # by outcome index: success, error
        self.sampled_out = [0, 0]

    def collect(self) -> Iterator[CounterMetricFamily]:
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


class _SpoolCounts:
    """Counters the spool's syncer thread keeps as plain ints on the `Spool`, read when /metrics
    is scraped (zero until a spool is watched)."""

    def __init__(self) -> None:
        self.spool: Spool | None = None

    def collect(self) -> Iterator[CounterMetricFamily]:
        fsyncs = CounterMetricFamily(
            "modelserving_inference_log_spool_fsyncs",
            "fsyncs of the spool's segment files: records written less than the fsync interval "
            "(spoolFsyncIntervalSeconds) before a power loss may be lost",
        )
        fsyncs.add_metric([], self.spool.fsyncs if self.spool is not None else 0)
        yield fsyncs


class InferenceLogMetrics:
    """The pipeline's Prometheus metrics, in the registry the sidecar exposes."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        prefix = "modelserving_inference_log"
        c, g = prometheus_client.Counter, prometheus_client.Gauge
        self.counts = _SubmitCounts()
        registry.register(self.counts)
        self._spool_counts = _SpoolCounts()
        registry.register(self._spool_counts)
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
        self.payloads_unencodable = c(
            f"{prefix}_payloads_unencodable",
            "Payloads the log could not make into the record's text (a gRPC message it cannot "
            "write as JSON, JSON nested too deeply to parse, a fault of the log's), by part: the "
            "record holds a marker with the reason instead",
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
        for reason in ("spool_full", "queue_full", "too_large", "corrupt", "shutdown", "failed"):
            self.dropped.labels(reason)
        self._part_counters = {
            part: (
                self.payloads_redacted.labels(part),
                self.payloads_cut.labels(part, "truncate"),
                self.payloads_cut.labels(part, "digest"),
                self.payloads_dropped.labels(part),
                self.payloads_unencodable.labels(part),
            )
            for part in ("request", "response")
        }

    def watch_spool(self, spool: Spool) -> None:
        """Expose the counters `spool` keeps (its fsyncs)."""
        self._spool_counts.spool = spool

    def count_changes(self, request: ShapedPayload, response: ShapedPayload) -> None:
        """Count what redaction, the size limit and the non-JSON policy did to one record."""
        for part, shaped in (("request", request), ("response", response)):
            if not (shaped.redacted or shaped.cut or shaped.dropped or shaped.unencodable):
                continue
            redacted, truncated, digested, dropped, unencodable = self._part_counters[part]
            if shaped.redacted:
                redacted.inc()
            if shaped.cut is OversizePolicy.TRUNCATE:
                truncated.inc()
            elif shaped.cut is OversizePolicy.DIGEST:
                digested.inc()
            if shaped.dropped:
                dropped.inc()
            if shaped.unencodable is not None:
                unencodable.inc()
