"""The request id every answer carries in `X-Request-Id`: the caller's when sane, else a new one.

New ids are time-ordered like UUIDv7 (48 bits of milliseconds, then random bits), so the
inference log's Kafka keys sort roughly by arrival.
"""

from __future__ import annotations

import random
import re
import time

HEADER = "X-Request-Id"
# Short printable token characters only: the id goes into logs, Kafka keys and headers.
_SANE = re.compile(r"[A-Za-z0-9._:+=@-]{1,128}")
_random_bits = random.Random().getrandbits  # ids need to be unique, not secret


def new_request_id() -> str:
    """A UUIDv7-shaped id: version 7, variant 10, 48 bits of ms since the epoch first."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | _random_bits(76)
    value = value & ~(0x3 << 62) | 0x2 << 62
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def request_id(header_value: str | None) -> str:
    """The caller's id when it is a short token, else a new one."""
    if header_value is not None and _SANE.fullmatch(header_value):
        return header_value
    return new_request_id()
