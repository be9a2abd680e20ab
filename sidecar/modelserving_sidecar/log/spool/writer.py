"""The one thread that appends to the inference log's spool: a batch of records per wake-up, an
fsync when the spool's interval has passed (also while no batch comes), and the acknowledged
position each time it moves, so that disk I/O never runs on the event loop."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from modelserving_sidecar.log.spool.segments import Spool, SpoolRecord

# What a SpoolWriter reports for each batch: the records, the first id given, how many were
# appended (a prefix: the spool was full for the rest), and the error if the write failed.
AppendDone = Callable[[list[SpoolRecord], int, int, BaseException | None], None]
# What a SpoolWriter reports for each position write: the position (written, or tried: a disk
# that fails costs duplicates after a kill, never a record).
PositionDone = Callable[[int], None]


class _PositionDue:
    """The job that asks the thread to write the newest acknowledged position."""


_POSITION_DUE = _PositionDue()


class SpoolWriter:
    """The one thread that appends to a spool: a batch of records per wake-up, each reported to
    `done` (called in this thread), an fsync when the spool's interval has passed, also while
    no batch comes, and the acknowledged position when it moves, reported to `position_done`."""

    def __init__(
        self, spool: Spool, done: AppendDone, position_done: PositionDone | None = None
    ) -> None:
        self.spool = spool
        self._done = done
        self._position_done = position_done
        self._position = spool.acked_id  # the newest acknowledged position to write
        self._position_due = False  # a _POSITION_DUE job is queued
        # Batches to append, positions to write; None asks the thread to end.
        self._jobs: queue.SimpleQueue[list[SpoolRecord] | _PositionDue | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inference-log-spool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, records: list[SpoolRecord]) -> None:
        """Queue one batch (never blocks); `done` reports it."""
        self._jobs.put(records)

    def write_position(self, acked_id: int) -> None:
        """Queue the acknowledged position (never blocks): when several come before the thread
        gets to them, it writes only the newest; `position_done` reports it."""
        self._position = acked_id
        if not self._position_due:
            self._position_due = True
            self._jobs.put(_POSITION_DUE)

    def stop(self, timeout: float | None = None) -> None:
        """Append what is queued, fsync, and end the thread (blocks: call it from a thread)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        spool, jobs = self.spool, self._jobs
        while True:
            try:
                job = jobs.get(timeout=spool.seconds_until_sync())
            except queue.Empty:  # no batch came before the fsync fell due
                self._sync_if_due()
                continue
            if job is None:
                return
            if isinstance(job, _PositionDue):
                self._write_position()
                self._sync_if_due()
                continue
            try:
                first_id, count = spool.append(job)
            except BaseException as exc:  # reported: the pipeline decides what to do
                self._done(job, spool.next_id, 0, exc)
            else:
                self._done(job, first_id, count, None)
            self._sync_if_due()

    def _sync_if_due(self) -> None:
        # A disk that fails shows in the next write's report; fsync is tried again then.
        with contextlib.suppress(OSError):
            self.spool.sync_if_due()

    def _write_position(self) -> None:
        # Cleared before the position is read: a newer one set meanwhile queues a job of its own.
        self._position_due = False
        acked_id = self._position
        with contextlib.suppress(OSError):  # a kill then sends again from an older position
            self.spool.write_position(acked_id)
        if self._position_done is not None:
            self._position_done(acked_id)
