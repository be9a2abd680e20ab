"""The thread that forces the inference log's spool to disk: a sync of what was written (the
segments, new directory entries) once per the spool's fsync interval, so that neither the
event loop, which writes the records, nor an answer waiting for its record ever waits for an
fsync."""

from __future__ import annotations

import contextlib
import threading

from modelserving_sidecar.log.spool.segments import Spool

# With an fsync interval of 0 the pipeline syncs after each write itself; the thread then only
# looks now and then (a write the pipeline's own sync missed, say, while a disk failed).
_IDLE_LOOK_SECONDS = 1.0


class SpoolSyncer:
    """The one thread that syncs a spool: once per fsync interval while something was written."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="inference-log-spool-sync", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (blocks: call it from a thread); the spool's close syncs the rest."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        spool = self.spool
        interval = spool.fsync_interval or _IDLE_LOOK_SECONDS
        while not self._stopping.wait(interval):
            if spool.unsynced:
                # A disk that fails shows in the writes; the next look syncs again.
                with contextlib.suppress(OSError):
                    spool.sync()
