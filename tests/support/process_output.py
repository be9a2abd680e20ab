"""A subprocess's output read line by line on a thread of its own, so that waiting for a line
keeps its deadline even while the process prints nothing or hangs."""

from __future__ import annotations

import queue
import threading
import time
from typing import IO

import pytest


class ProcessOutput:
    """The lines of a text stream (a Popen's stdout), queued as they arrive."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.name = name
        self._lines: queue.Queue[str | None] = queue.Queue()
        # A daemon thread: one blocked on a process that never ends must not keep pytest alive.
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # the stream ended: the process closed it or exited

    def wait_line(self, prefix: str, timeout: float) -> str:
        """The next line starting with `prefix`; fails at the deadline or when the output ends."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                pytest.fail(f"{self.name} did not print {prefix} within {timeout} s", pytrace=False)
            if line is None:
                self._lines.put(None)  # for the next wait, which must fail as fast
                pytest.fail(f"{self.name} ended without printing {prefix}", pytrace=False)
            if line.startswith(prefix):
                return line
