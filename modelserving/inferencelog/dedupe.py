"""Which inference log records a reader has already seen: a bounded window of the most recent
records, for readers that drop the copies an at-least-once pipeline re-sends after a crash.

What "the same record" means: the same Kafka key, headers and value, byte for byte. That is
exactly what the pipeline re-sends (the key, headers and Avro value are made once, when the
record goes into the spool, and a re-send reads them back from it). The key alone (the request
id) would say too much: a record that differs under the same key is a record of its own, such
as a shadow model version's answer to the same request (logged under the same request id with a
header saying so), and is kept.

Memory: a record is remembered by a 16-byte BLAKE2b digest of its key, headers and value (never
by its payloads, which can be 256 KiB each), in an ordered dict of at most `size` entries: up
to 250 bytes a record (the digest, the dict's slot and its share of a table that grows in powers
of two), so the default window of 100,000 records holds at most some 25 MB. A chance
collision of two different records (which would drop the second) is of the order of 2^-128 per
pair: it does not happen.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Sequence

# The window `modelserving logs --dedupe` uses when given no number: far more records than a
# crash re-sends (those Kafka had not acknowledged), in at most some 25 MB.
DEFAULT_WINDOW = 100_000

_LENGTH = struct.Struct(">q")
_NO_KEY = -1  # a record without a key is told apart from one with an empty key


def record_identity(key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes) -> bytes:
    """A 16-byte digest of what makes a Kafka record the same record: key, headers, value.

    Every part is written with its length first, so that no two different records run together
    into the same bytes (a key `ab` and value `c` against a key `a` and value `bc`).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(_LENGTH.pack(_NO_KEY if key is None else len(key)))
    if key is not None:
        digest.update(key)
    digest.update(_LENGTH.pack(len(headers)))
    for name, header_value in headers:
        encoded_name = name.encode()
        digest.update(_LENGTH.pack(len(encoded_name)))
        digest.update(encoded_name)
        digest.update(_LENGTH.pack(len(header_value)))
        digest.update(header_value)
    digest.update(_LENGTH.pack(len(value)))
    digest.update(value)
    return digest.digest()


class DuplicateWindow:
    """The `size` records seen most recently, each remembered by its identity; `dropped` counts
    the records found to repeat one of them.

    A record seen again counts as seen most recently, so a third copy (a second crash) is
    caught as well; once `size` other records have been seen since, it is forgotten and a copy
    of it is kept as new.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a duplicate window holds at least 1 record, not {size}")
        self.size = size
        self.dropped = 0
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    @property
    def remembered(self) -> int:
        """How many records the window remembers now (never more than `size`)."""
        return len(self._recent)

    def seen(self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes) -> bool:
        """Whether this record repeats one of the recent records (and is counted in `dropped`);
        either way it becomes the most recent one."""
        identity = record_identity(key, headers, value)
        if identity in self._recent:
            self._recent.move_to_end(identity)
            self.dropped += 1
            return True
        self._recent[identity] = None
        if len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return False
