"""The inference log's acknowledgement tracker against a model of Kafka: records are spooled,
sent in runs split into batches, acknowledged or failed in any order, producers replaced
(rewinds), records lost to corruption on disk, and the process restarted from the ledger.

What must hold whatever happens: the tracker never counts a record as acknowledged that Kafka
does not have (the spool would forget it); a process never sends again a record Kafka
acknowledged to it (duplicates come only from what was in flight); and once Kafka answers again
every spooled record reaches it (nothing is skipped that Kafka did not take).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from modelserving.sidecar.ack_tracker import AckTracker, SendRun

MAX_IN_FLIGHT = 8


@dataclass
class Batch:
    """One Kafka batch handed to a producer and not yet answered."""

    run: SendRun
    ids: list[int]
    tracker: AckTracker  # the process that sent it: after a restart nobody hears its answer


class AckTrackerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.written = 0  # ids 1..written are in the spool
        self.in_kafka: set[int] = set()  # what the topic holds
        self.corrupt: set[int] = set()  # lost on disk before they were sent
        self.ledger = 0  # the acknowledged position last written to disk
        self.tracker = AckTracker(acked_id=0, next_id=1)
        self.acked_seen = 0
        self.outstanding: list[Batch] = []
        self.acknowledged_to_process: set[int] = set()  # runs this process saw completed

    # ------------------------------------------------------------- the spool and the sender

    @rule(count=st.integers(1, 6))
    def spool(self, count: int) -> None:
        self.written += count

    @precondition(lambda self: self.written > self.tracker.acked_id)
    @rule(offset=st.integers(0, 5))
    def corrupt_on_disk(self, offset: int) -> None:
        """A frame not yet acknowledged goes bad on disk (it can never be sent again)."""
        record_id = min(self.written, self.tracker.acked_id + 1 + offset)
        if record_id not in self.in_kafka:
            self.corrupt.add(record_id)

    @rule(most=st.integers(1, MAX_IN_FLIGHT), batches=st.integers(1, 3), data=st.data())
    def send(self, most: int, batches: int, data: st.DataObject) -> None:
        """What the sender does: a run of consecutive readable ids from the next one on (after
        any corrupt ones), split into batches (partitions); an oversized record may be left out."""
        tracker = self.tracker
        if tracker.rewind_reason is not None:
            return  # the sender replaces the producer before it sends anything more
        room = MAX_IN_FLIGHT - tracker.in_flight_records
        first = tracker.next_send
        while first in self.corrupt:
            first += 1
        ids = []
        while first + len(ids) <= self.written and first + len(ids) not in self.corrupt:
            ids.append(first + len(ids))
            if len(ids) >= min(room, most):
                break
        if room <= 0 or not ids:
            return
        run, _ = tracker.begin_run(first, len(ids), timestamp_ms=first, now=0.0)
        unsent = tracker.unsent(run, ids)
        again = self.acknowledged_to_process.intersection(unsent)
        assert not again, f"sent again though Kafka acknowledged them: {sorted(again)}"
        if unsent and data.draw(st.booleans(), label="one record too large for Kafka"):
            self.corrupt.add(unsent.pop(data.draw(st.integers(0, len(unsent) - 1))))
        size = max(1, -(-len(unsent) // batches))
        for start in range(0, len(unsent), size):
            tracker.batch_sent(run)
            self.outstanding.append(Batch(run, unsent[start : start + size], tracker))
        tracker.seal(run)

    # ------------------------------------------------------------- Kafka's answers

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def kafka_acknowledges(self, data: st.DataObject) -> None:
        batch = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1)))
        self.in_kafka.update(batch.ids)
        self._acknowledge(batch)

    def _acknowledge(self, batch: Batch) -> None:
        acked = batch.tracker is self.tracker and self.tracker.batch_acked(batch.run)
        if acked and batch.run.done:
            self.acknowledged_to_process.update(range(batch.run.first, batch.run.last + 1))

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data(), stored=st.booleans())
    def kafka_fails(self, data: st.DataObject, stored: bool) -> None:
        """A send fails (a timeout: Kafka may have stored the batch all the same)."""
        batch = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1)))
        if stored:
            self.in_kafka.update(batch.ids)
        if batch.tracker is self.tracker:
            batch.tracker.batch_failed(batch.run, "KafkaTimeoutError")

    @rule()
    def producer_stalls(self) -> None:
        if self.tracker.awaiting_acks():
            self.tracker.request_rewind("stalled")

    @precondition(lambda self: self.tracker.rewind_reason is not None)
    @rule()
    def replace_the_producer(self) -> None:
        self.tracker.rewind()

    # ------------------------------------------------------------- the process

    @rule()
    def write_the_ledger(self) -> None:
        self.ledger = self.tracker.acked_id

    @rule(data=st.data())
    def killed_and_restarted(self, data: st.DataObject) -> None:
        """SIGKILL: batches in flight land or not; the new process starts from the ledger."""
        for batch in self.outstanding:
            if data.draw(st.booleans(), label="in flight batch landed"):
                self.in_kafka.update(batch.ids)
        self.outstanding.clear()
        self.tracker = AckTracker(acked_id=self.ledger, next_id=self.written + 1)
        self.acked_seen = self.ledger
        self.acknowledged_to_process.clear()

    # ------------------------------------------------------------- what must hold

    @invariant()
    def only_what_kafka_has_counts_as_acknowledged(self) -> None:
        acked = self.tracker.acked_id
        assert acked >= self.acked_seen, "the acknowledged position went back"
        self.acked_seen = acked
        missing = set(range(1, acked + 1)) - self.in_kafka - self.corrupt
        assert not missing, f"counted as in Kafka but not there: {sorted(missing)}"

    @invariant()
    def in_flight_is_what_lies_between_acked_and_next(self) -> None:
        tracker = self.tracker
        assert tracker.in_flight_records == tracker.next_send - 1 - tracker.acked_id

    def teardown(self) -> None:
        """Kafka answers again: the sender keeps going until every readable record is
        acknowledged (corrupt ones after the last readable one wait for a later record)."""
        if not hasattr(self, "tracker"):
            return
        readable = [i for i in range(1, self.written + 1) if i not in self.corrupt]
        last = max(readable, default=0)
        for _ in range(4 * (self.written + 2)):
            if self.tracker.acked_id >= last:
                break
            if self.tracker.rewind_reason is not None:
                self.tracker.rewind()
            self.send(MAX_IN_FLIGHT, 1, _NoDraws())
            while self.outstanding:
                batch = self.outstanding.pop(0)
                self.in_kafka.update(batch.ids)
                self._acknowledge(batch)
        assert self.tracker.acked_id >= last, "the sender stopped short"
        lost = set(readable) - self.in_kafka
        assert not lost, f"never reached Kafka: {sorted(lost)}"


class _NoDraws:
    """Answers `send`'s draws in the drain: no record is too large."""

    def draw(self, strategy: st.SearchStrategy[object], label: str = "") -> object:
        return False


AckTrackerMachine.TestCase.settings = settings(
    max_examples=1500, stateful_step_count=40, deadline=None
)
test_ack_tracker_against_a_model_of_kafka = AckTrackerMachine.TestCase


def test_a_run_must_start_where_the_last_one_ended() -> None:
    tracker = AckTracker(acked_id=3, next_id=10)
    with pytest.raises(ValueError, match="the next id is 4"):
        tracker.begin_run(2, 1, timestamp_ms=0, now=0.0)


def test_records_sent_by_an_earlier_process_count_as_replays() -> None:
    tracker = AckTracker(acked_id=3, next_id=10)  # 4..9 were perhaps sent before a restart
    _, replays = tracker.begin_run(4, 10, timestamp_ms=0, now=0.0)
    assert replays == 6


def test_acks_of_a_replaced_producer_are_not_counted() -> None:
    tracker = AckTracker(acked_id=0, next_id=1)
    run, _ = tracker.begin_run(1, 5, timestamp_ms=0, now=0.0)
    tracker.batch_sent(run)
    tracker.seal(run)
    tracker.batch_failed(run, "KafkaTimeoutError")
    tracker.rewind()
    assert tracker.batch_acked(run) is False
    assert (tracker.acked_id, tracker.next_send) == (0, 1)
