"""A serving's Ready condition watched through a change: read every 0.2 s in a thread, so a
test can say it never went False (a moment's False between two of its own reads would pass
unseen)."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from tests.support.servings import condition, get_serving

INTERVAL_SECONDS = 0.2


class ReadyWatch:
    """Use as a context manager around the change: `seen` holds each Ready read that was not
    True (time, status, reason, message), and `reads` how many reads there were."""

    def __init__(self, objects, namespace: str, name: str) -> None:
        self._objects, self._namespace, self._name = objects, namespace, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.seen: list[tuple[float, str, str, str]] = []
        self.reads = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready = condition(get_serving(self._objects, self._namespace, self._name), "Ready")
            except Exception:  # a failed read is no Ready read: try again
                ready = None
            if ready is not None:
                self.reads += 1
                if ready.get("status") != "True":
                    said = (
                        ready.get("status", ""),
                        ready.get("reason", ""),
                        ready.get("message", ""),
                    )
                    self.seen.append((time.monotonic(), *said))
            self._stop.wait(INTERVAL_SECONDS)

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
