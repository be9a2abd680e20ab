"""Where a spool keeps its acknowledged position (every record up to it is in Kafka) on disk: the
ledger, replaced atomically on an interval, and the position file, written each time the
position moves so that a killed process sends again only what Kafka had not acknowledged.

The position file is two slots of 16 bytes, written in turn with pwrite at a fixed offset:

    magic u32 | acknowledged id u64 | crc32(magic, id) u32

Each write overwrites the older slot, so a torn write leaves the newer of the two standing; a
slot whose magic or crc does not match is ignored. The file never grows: it needs no
compaction. Reading takes the highest valid position of the ledger and the two slots.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from pathlib import Path

LEDGER_FILE = "ledger.json"
POSITION_FILE = "acked.pos"
POSITION_MAGIC = 0x4D534131  # "MSA1"
_SLOT = struct.Struct("<IQI")  # magic, acknowledged id, crc32 of the two
_SIGNED = struct.Struct("<IQ")
SLOT_BYTES = _SLOT.size
SLOTS = 2


def encode_position(acked_id: int) -> bytes:
    """One slot of the position file, holding `acked_id`."""
    signed = _SIGNED.pack(POSITION_MAGIC, acked_id)
    return signed + struct.pack("<I", zlib.crc32(signed))


def decode_positions(data: bytes) -> list[int | None]:
    """The position in each slot of `data` (None where the slot is torn, corrupt or missing)."""
    positions: list[int | None] = []
    for slot in range(SLOTS):
        chunk = data[slot * SLOT_BYTES : (slot + 1) * SLOT_BYTES]
        position = None
        if len(chunk) == SLOT_BYTES:
            magic, acked_id, crc = _SLOT.unpack(chunk)
            if magic == POSITION_MAGIC and zlib.crc32(chunk[: _SIGNED.size]) == crc:
                position = acked_id
        positions.append(position)
    return positions


def read_ledger(directory: Path) -> int:
    """The position the ledger holds (0 when there is none, or it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return int(json.loads((directory / LEDGER_FILE).read_text())["acked"])
    return 0


def write_ledger(directory: Path, acked_id: int, sync: bool = False) -> None:
    """Replace the ledger (atomically: a kill leaves the old one or the new one)."""
    ledger = directory / LEDGER_FILE
    tmp = ledger.with_suffix(".tmp")
    with open(tmp, "w") as out:
        json.dump({"acked": acked_id}, out)
        if sync:
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, ledger)


class PositionFile:
    """A spool's position file: read at open, then written each time the acks move."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / POSITION_FILE
        self.written = 0  # the highest position in the file
        self._fd: int | None = None
        self._next_slot = 0

    def open(self) -> int:
        """Open the file for writing; return the highest valid position in it (0: none)."""
        try:
            positions = decode_positions(self.path.read_bytes())
        except FileNotFoundError:
            positions = [None] * SLOTS
        valid = [p for p in positions if p is not None]
        self.written = max(valid, default=0)
        # The first write goes over the slot that does not hold the highest position.
        self._next_slot = 1 if positions[0] == self.written and valid else 0
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        return self.written

    def write(self, acked_id: int) -> None:
        """Write `acked_id` over the older slot, when it is higher than what the file holds.

        No fsync: a killed process leaves its writes in the page cache. What power loss can
        take is the spool's fsync interval's business; a position older than the records costs
        duplicates, never a record."""
        if self._fd is None or acked_id <= self.written:
            return
        os.pwrite(self._fd, encode_position(acked_id), self._next_slot * SLOT_BYTES)
        self._next_slot ^= 1
        self.written = acked_id

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
