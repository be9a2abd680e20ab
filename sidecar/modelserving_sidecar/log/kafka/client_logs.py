"""aiokafka's logs, summarised: while a broker is down it logs a failed connect and a metadata
error every ~100 ms, which would bury the sidecar's own lines."""

from __future__ import annotations

import logging
import time

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
