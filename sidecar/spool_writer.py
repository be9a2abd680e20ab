"""The one thread that appends to the inference log's spool: a batch of records per wake-up, an
fsync when the spool's interval has passed (also while no batch comes), so that disk I/O never
runs on the event loop."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

from modelserving.sidecar.spool import Spool, SpoolRecord

# What a SpoolWriter reports for each batch: the records, the first id given, how many were
# appended (a prefix: the spool was full for the rest), and the error if the write failed.
AppendDone = Callable[[list[SpoolRecord], int, int, BaseException | None], None]


class SpoolWriter:
    """The one thread that appends to a spool: a batch of records per wake-up, each reported to
    `done` (called in this thread), and an fsync when the spool's interval has passed, also
    while no batch comes."""

    def __init__(self, spool: Spool, done: AppendDone) -> None:
        self.spool = spool
        self._done = done
        # Batches to append; None asks the thread to end.
        self._jobs: queue.SimpleQueue[list[SpoolRecord] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inference-log-spool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def append(self, records: list[SpoolRecord]) -> None:
        """Queue one batch (never blocks); `done` reports it."""
        self._jobs.put(records)

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
