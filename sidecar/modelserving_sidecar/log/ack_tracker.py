"""Which spooled records Kafka has acknowledged, and which to send (again): the inference log's
bookkeeping between the spool and the producer, as a pure class with no I/O.

Records have consecutive ids. The sender hands them to a producer in runs; a run is split into
Kafka batches (one or more per partition) and is done when every batch of it is acknowledged.
Runs end out of order (partitions ack independently), but the acknowledged position
(`acked_id`: every id up to it is in Kafka) only moves over runs that are done, oldest first, so
it is the position the spool may forget up to. A failed batch of the current producer asks for
a rewind: a new producer (a new generation) sends everything after `acked_id` again, except the
runs Kafka had already acknowledged out of order; acks and failures of an older generation are
ignored, so a record is never counted as delivered on the word of a producer that was replaced.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class SendRun:
    """Records first..last handed to the producer together (or known lost), awaiting acks."""

    first: int
    last: int
    timestamp_ms: int  # the first record's
    sent_at: float
    generation: int
    batches: int = 0  # Kafka batches made of it and not yet acknowledged
    sealed: bool = False  # every batch of it is handed to the producer
    done: bool = False

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class AckTracker:
    """The acknowledgement state of one spool's records under a succession of producers."""

    def __init__(self, acked_id: int, next_id: int) -> None:
        """Start from a spool: every id up to `acked_id` is in Kafka, ids below `next_id` are
        spooled (those after `acked_id` were perhaps sent by a previous run: replays)."""
        self.acked_id = acked_id
        self.next_send = acked_id + 1  # the next id to hand to the producer
        self.generation = 0  # the current producer's
        self.rewind_reason: str | None = None  # set: the current producer must be replaced
        self.sent_high = next_id - 1  # the highest id ever sent: ids at or under it are replays
        self._runs: collections.deque[SendRun] = collections.deque()
        self._in_flight = 0  # records in self._runs
        self._last_registered = acked_id
        # Ids Kafka acknowledged out of order before a rewind: not to be sent again. Kept until
        # the acknowledged position passes them, whatever rewinds come between.
        self._skip: set[int] = set()
        self._skip_high = 0

    @property
    def in_flight_records(self) -> int:
        """Records handed to the producer (or skipped over) and not yet under `acked_id`."""
        return self._in_flight

    def awaiting_acks(self) -> bool:
        """True when a run is waiting for Kafka."""
        return any(not run.done for run in self._runs)

    def oldest_unacked_timestamp_ms(self) -> int | None:
        """The timestamp of the oldest run still waiting for Kafka, if any."""
        return next((run.timestamp_ms for run in self._runs if not run.done), None)

    def begin_run(
        self, first: int, count: int, timestamp_ms: int, now: float
    ) -> tuple[SendRun, int]:
        """Register `count` records from id `first` on as about to be sent; returns the run and
        how many of them are replays (sent before, by an earlier producer or process).

        `first` is `next_send`, or later when the ids between were lost to corruption on disk:
        those count as done, since nothing of them can ever be acknowledged."""
        if count < 1 or first < self.next_send:
            raise ValueError(f"a run of {count} from {first}: the next id is {self.next_send}")
        if first > self._last_registered + 1:
            gap = SendRun(self._last_registered + 1, first - 1, timestamp_ms, 0.0, self.generation)
            gap.done = True
            self._runs.append(gap)
            self._in_flight += gap.size
        run = SendRun(first, first + count - 1, timestamp_ms, now, self.generation)
        self._runs.append(run)
        self._in_flight += count
        self._last_registered = run.last
        self.next_send = run.last + 1
        replays = max(0, min(run.last, self.sent_high) - first + 1)
        self.sent_high = max(self.sent_high, run.last)
        return run, replays

    def unsent(self, run: SendRun, records: Sequence[T]) -> list[T]:
        """The records of `run` (in id order) that Kafka has not already acknowledged."""
        if not self._skip:
            return list(records)
        skip = self._skip
        return [record for i, record in enumerate(records, run.first) if i not in skip]

    def batch_sent(self, run: SendRun) -> None:
        """One Kafka batch of `run` was handed to the producer."""
        run.batches += 1

    def seal(self, run: SendRun) -> None:
        """Every batch of `run` is handed to the producer (some records may have been left out)."""
        run.sealed = True
        if not run.batches:
            self._finish(run)

    def batch_acked(self, run: SendRun) -> bool:
        """Kafka acknowledged one batch of `run`. False when that producer was replaced since (its
        records are sent again, and the ack is not counted)."""
        if run.generation != self.generation or run.done:
            return False
        run.batches -= 1
        if run.sealed and not run.batches:
            self._finish(run)
        return True

    def batch_failed(self, run: SendRun, reason: str) -> None:
        """A batch of `run` failed: the current producer must be replaced (once)."""
        if run.generation == self.generation:
            self.request_rewind(reason)

    def request_rewind(self, reason: str) -> None:
        """Ask for a new producer (a failed send, a stalled producer); the first reason stays."""
        if self.rewind_reason is None:
            self.rewind_reason = reason

    def rewind(self) -> None:
        """A new producer: everything after `acked_id` is to be sent again, except what Kafka
        acknowledged out of order; whatever the old producer reports from now on is ignored."""
        self.generation += 1
        # Kept from an earlier rewind too: a run holding them may not have been acknowledged.
        self._skip = {i for i in self._skip if i > self.acked_id} | {
            i for run in self._runs if run.done for i in range(run.first, run.last + 1)
        }
        self._skip_high = max(self._skip, default=0)
        self._runs.clear()
        self._in_flight = 0
        self._last_registered = self.acked_id
        self.next_send = self.acked_id + 1
        self.rewind_reason = None

    def _finish(self, run: SendRun) -> None:
        run.done = True
        runs = self._runs
        while runs and runs[0].done:
            head = runs.popleft()
            self.acked_id = head.last
            self._in_flight -= head.size
        if self._skip and self.acked_id >= self._skip_high:
            self._skip = set()
