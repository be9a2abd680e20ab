"""The inference log's acknowledgement tracker against a model of Kafka: records are spooled,
sent in runs split into batches, acknowledged or failed in any order, producers replaced
(rewinds), records lost to corruption on disk, and the process killed and restarted from what
reached the disk: the ledger and the position file (the real one, in a scratch folder, a write to
it torn by the kill at times).

What must hold whatever happens: the tracker never counts a record as acknowledged that Kafka
does not have (the spool would forget it); a process never sends again a record Kafka
acknowledged to it, and no process ever sends again a record whose acknowledgement reached the
position file (duplicates come only from what was in flight, or acknowledged after the last
position write); and once Kafka answers again every spooled record reaches it (nothing is
skipped that Kafka did not take).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from modelserving_sidecar.log.ack_tracker import AckTracker, SendRun
from modelserving_sidecar.log.spool import ledger as spool_ledger
from modelserving_sidecar.log.spool.ledger import SLOT_BYTES, PositionFile
from tests.support import examples

MAX_IN_FLIGHT = 8
REAL_PWRITE = os.pwrite


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
        self.directory = Path(tempfile.mkdtemp(prefix="ack-tracker-"))
        self.position = PositionFile(self.directory)
        self.position.open()
        self.on_disk = 0  # the highest position a completed write put on disk (ledger or file)

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
        known = [i for i in unsent if i <= self.on_disk]
        assert not known, f"sent again though their acknowledgement was on disk: {known}"
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
        self.on_disk = max(self.on_disk, self.ledger)

    @rule()
    def write_the_position(self) -> None:
        """The position is written as the acks move (a kill may come before it is)."""
        self.position.write(self.tracker.acked_id)
        self.on_disk = max(self.on_disk, self.position.written)

    @rule(data=st.data())
    def killed_and_restarted(self, data: st.DataObject) -> None:
        """SIGKILL: batches in flight land or not, a position write under way is torn or not;
        the new process starts from the highest position on disk."""
        for batch in self.outstanding:
            if data.draw(st.booleans(), label="in flight batch landed"):
                self.in_kafka.update(batch.ids)
        self.outstanding.clear()
        newest = self.tracker.acked_id
        if newest > self.position.written and data.draw(st.booleans(), label="torn write"):
            # The kill comes in the middle of the position file's own write: part of it lands.
            part = data.draw(st.integers(1, SLOT_BYTES - 1), label="bytes that landed")

            def torn_pwrite(fd: int, data: bytes, offset: int) -> int:
                return REAL_PWRITE(fd, data[:part], offset)

            with mock.patch.object(spool_ledger.os, "pwrite", torn_pwrite):
                self.position.write(newest)
        self.position.close()
        self.position = PositionFile(self.directory)
        acked = max(self.ledger, self.position.open())
        assert acked >= self.on_disk, f"a written position was lost: {acked} < {self.on_disk}"
        self.tracker = AckTracker(acked_id=acked, next_id=self.written + 1)
        self.acked_seen = acked
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
        self.position.close()
        shutil.rmtree(self.directory, ignore_errors=True)
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


class _Draws:
    """Answers a rule's draws with the values given, in order."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: st.SearchStrategy[object], label: str = "") -> object:
        return self.values.pop(0)


AckTrackerMachine.TestCase.settings = settings(
    max_examples=examples(1500), stateful_step_count=40, deadline=None
)
test_ack_tracker_against_a_model_of_kafka = AckTrackerMachine.TestCase


def test_a_position_write_torn_by_a_kill_leaves_the_one_before() -> None:
    """The machine's path to the torn write, spelled out (the search finds it only at times):
    1..2 acknowledged and on disk, 3 acknowledged, its position write torn by a SIGKILL. The
    restarted process must send 3 again, and never 1 or 2."""
    machine = AckTrackerMachine()
    machine.start()
    try:
        machine.spool(3)
        machine.send(2, 1, _NoDraws())
        machine.kafka_acknowledges(_Draws(0))
        machine.write_the_position()
        machine.send(1, 1, _NoDraws())
        machine.kafka_acknowledges(_Draws(0))
        machine.killed_and_restarted(_Draws(True, SLOT_BYTES // 2))  # torn, half of it landed
        assert machine.tracker.acked_id == 2
    finally:
        machine.teardown()


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
