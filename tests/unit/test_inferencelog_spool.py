"""The disk spool: records come back in order with key and headers, acknowledged segments go,
a reopened spool replays what was not acked (from the last acknowledged position, even after a
kill), corruption is skipped and counted, a full spool takes only what fits, its fsyncs are
counted in the metrics, and one process at a time writes a spool."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelserving_sidecar.log.kafka.client_logs import RepeatedLogFilter
from modelserving_sidecar.log.metrics import InferenceLogMetrics
from modelserving_sidecar.log.spool.ledger import POSITION_FILE, SLOT_BYTES, write_ledger
from modelserving_sidecar.log.spool.segments import (
    LOCK_FILE,
    SEGMENT_SUFFIX,
    Spool,
    SpoolInUseError,
    SpoolRecord,
    decode_frames,
    encode_frame,
)
from modelserving_sidecar.log.spool.syncer import SpoolSyncer
from tests.support.waiting import wait_for


def record(i: int, size: int = 100) -> SpoolRecord:
    return SpoolRecord(
        key=f"req-{i}".encode(),
        headers=(("request-id", f"req-{i}".encode()), ("pod", b"p")),
        value=bytes([i % 256]) * size,
        timestamp_ms=1_700_000_000_000 + i,
    )


def open_spool(path, max_bytes=10_000_000, segment_bytes=4096) -> Spool:
    spool = Spool(path, max_bytes=max_bytes, segment_bytes=segment_bytes, fsync_interval=0.0)
    spool.open()
    return spool


def as_if_killed(spool: Spool) -> None:
    """What the kernel does for a process that dies: its files close, the spool's lock with
    them (nothing else of the spool is closed or written)."""
    assert spool._lock_fd is not None
    os.close(spool._lock_fd)
    spool._lock_fd = None


def read_all(spool: Spool) -> list:
    out = []
    while batch := spool.read(1000).records:
        out += batch
    return out


@given(
    key=st.none() | st.binary(min_size=1),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=50)), max_size=5),
    value=st.binary(max_size=2000),
    ts=st.integers(0, 2**63 - 1),
    record_id=st.integers(1, 2**63),
)
def test_any_frame_decodes_back(key, headers, value, ts, record_id):
    rec = SpoolRecord(key, tuple(headers), value, ts)
    records, used, corrupt = decode_frames(encode_frame(record_id, rec), final=True)
    assert used == len(encode_frame(record_id, rec))
    assert corrupt == 0
    assert [(r.id, r.record) for r in records] == [(record_id, rec)]


def test_records_come_back_in_order_across_segments(tmp_path):
    spool = open_spool(tmp_path)
    for start in range(0, 300, 50):
        spool.append([record(i) for i in range(start, start + 50)])
    assert len(list(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))) > 3
    got = read_all(spool)
    assert [r.id for r in got] == list(range(1, 301))
    assert [r.record for r in got] == [record(i) for i in range(300)]


def test_acked_segments_are_deleted_and_a_reopen_replays_only_unacked(tmp_path):
    spool = open_spool(tmp_path)
    for start in range(0, 300, 50):
        spool.append([record(i) for i in range(start, start + 50)])
    read_all(spool)
    before = spool.size_bytes
    spool.acknowledge(200)
    spool.write_ledger()
    assert spool.size_bytes < before
    # Like a SIGKILL: no close, the next process opens the same directory.
    as_if_killed(spool)
    again = open_spool(tmp_path)
    assert again.recovered_ids == 100
    got = read_all(again)
    assert [r.id for r in got] == list(range(201, 301))
    assert got[0].record == record(200)
    again.append([record(999)])
    assert [r.id for r in read_all(again)] == [301]


def test_a_killed_process_restarts_from_the_last_acknowledged_position(tmp_path):
    spool = open_spool(tmp_path)
    spool.append([record(i) for i in range(300)])
    spool.acknowledge(50)
    spool.write_ledger()
    for acked in (120, 180):  # as the writer thread writes them when acks move
        spool.write_position(acked)
    # Like a SIGKILL: no close, and no ledger written since 50.
    as_if_killed(spool)
    again = open_spool(tmp_path)
    assert again.acked_id == 180
    assert again.recovered_ids == 120
    assert [r.id for r in read_all(again)] == list(range(181, 301))


def torn(before: bytes, after: bytes, landed: int) -> bytes:
    """The file as a write that landed only its first `landed` bytes leaves it."""
    changed = next(i for i, b in enumerate(after) if i >= len(before) or before[i] != b)
    start = changed - changed % SLOT_BYTES  # the slot the write went to
    return after[: start + landed] + before[start + landed :]


@given(
    positions=st.lists(st.integers(1, 2**40), min_size=1, max_size=8, unique=True).map(sorted),
    landed=st.integers(0, SLOT_BYTES - 1),
    ledger=st.integers(0, 2**40),
)
def test_a_torn_last_position_is_ignored(positions, landed, ledger):
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        spool = open_spool(directory)
        for acked in positions[:-1]:
            spool.write_position(acked)
        before = (directory / POSITION_FILE).read_bytes()
        spool.write_position(positions[-1])
        after = (directory / POSITION_FILE).read_bytes()
        write_ledger(directory, ledger)
        torn_file = torn(before, after, landed)
        (directory / POSITION_FILE).write_bytes(torn_file)
        # The torn slot may by chance hold every byte of the new one: then it counts.
        complete = torn_file[: len(after)] == after
        previous = positions[-1] if complete else ([0, *positions])[-2]
        as_if_killed(spool)
        assert open_spool(directory).acked_id == max(previous, ledger)


def test_the_position_file_stays_small(tmp_path):
    spool = open_spool(tmp_path)
    for acked in range(1, 10_001):
        spool.write_position(acked)
    assert (tmp_path / POSITION_FILE).stat().st_size == 2 * SLOT_BYTES
    as_if_killed(spool)
    assert open_spool(tmp_path).acked_id == 10_000


def test_an_older_position_never_overwrites_a_newer_one(tmp_path):
    spool = open_spool(tmp_path)
    for acked in (3, 9, 7):  # a late report of an older position
        spool.write_position(acked)
    as_if_killed(spool)
    assert open_spool(tmp_path).acked_id == 9


def test_corrupt_records_are_skipped_and_counted(tmp_path):
    spool = open_spool(tmp_path, segment_bytes=1_000_000)
    spool.append([record(i) for i in range(10)])
    spool.close()
    segment = sorted(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))[0]
    data = bytearray(segment.read_bytes())
    frame = len(encode_frame(1, record(0)))
    data[3 * frame + 40] ^= 0xFF  # a bit flip in the 4th record's body
    data += data[:7]  # and a torn tail, as a kill mid-write leaves
    segment.write_bytes(bytes(data))
    again = open_spool(tmp_path)
    result = again.read(100)
    assert [r.id for r in result.records] == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    assert result.corrupt == 2
    assert result.missing_ids == 1


def test_a_full_spool_takes_only_what_fits(tmp_path):
    spool = open_spool(tmp_path, max_bytes=64 * 1024)
    first, count = spool.append([record(i, size=1000) for i in range(100)])
    assert first == 1
    assert 50 < count < 64
    assert spool.size_bytes <= 64 * 1024
    assert spool.append([record(0, size=1000)]) == (count + 1, 0)
    read_all(spool)
    spool.acknowledge(count)
    assert spool.append([record(0, size=1000)])[1] == 1


def test_seek_sends_again_from_an_id(tmp_path):
    spool = open_spool(tmp_path)
    spool.append([record(i) for i in range(100)])
    read_all(spool)
    spool.seek(40)
    assert [r.id for r in read_all(spool)] == list(range(40, 101))


def test_records_are_forced_to_disk_once_per_fsync_interval_and_the_fsyncs_are_counted(tmp_path):
    registry = prometheus_client.CollectorRegistry()
    metrics = InferenceLogMetrics(registry)

    def fsyncs() -> float | None:
        return registry.get_sample_value("modelserving_inference_log_spool_fsyncs_total")

    assert fsyncs() == 0  # exposed before the spool opens
    # A long interval: ten writes, none forced to disk yet (what a power loss could lose).
    lazy = Spool(tmp_path / "lazy", max_bytes=10**7, segment_bytes=10**6, fsync_interval=3600)
    lazy.open()
    metrics.watch_spool(lazy)
    for i in range(10):
        lazy.append([record(i)])
    assert fsyncs() == 0
    lazy.close()  # a clean stop forces what was written
    assert fsyncs() == 1

    # A short interval, through the syncer thread: synced after the writes, with no write
    # coming after them; the writes themselves never wait for it.
    spool = Spool(tmp_path / "often", max_bytes=10**7, segment_bytes=10**6, fsync_interval=0.05)
    spool.open()
    metrics.watch_spool(spool)
    syncer = SpoolSyncer(spool)
    syncer.start()
    try:
        spool.append([record(i) for i in range(5)])
        assert spool.unsynced
        wait_for(lambda: fsyncs() == 1, timeout=5, what="the syncer thread's fsync counted")
        assert not spool.unsynced  # all is on disk
    finally:
        syncer.stop(timeout=5)


def test_a_segment_replaced_before_the_sync_is_forced_to_disk_by_it_and_closed(tmp_path):
    # Small segments: the appends move to new ones, and the old ones wait, open, for the sync.
    spool = open_spool(tmp_path, segment_bytes=4096)
    spool.append([record(i, size=1000) for i in range(20)])
    segments = sorted(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))
    assert len(segments) > 2
    open_fds = len(os.listdir("/proc/self/fd"))
    fsyncs = spool.fsyncs
    spool.sync()
    assert spool.fsyncs - fsyncs == len(segments)  # every segment written since the last sync
    assert len(os.listdir("/proc/self/fd")) == open_fds - (len(segments) - 1)  # active stays
    assert not spool.unsynced


def test_repeated_aiokafka_lines_are_summarised():
    log_filter = RepeatedLogFilter(window_seconds=3600)
    line = logging.LogRecord(
        "aiokafka.conn", logging.ERROR, "", 0, "connect to %s failed", ("b",), None
    )
    assert log_filter.filter(line)
    assert not any(log_filter.filter(line) for _ in range(100))
    log_filter.window = 0
    assert log_filter.filter(line)
    assert "100 more like this" in line.getMessage()


HOLDER = """
import sys, time
from modelserving_sidecar.log.spool.segments import Spool, SpoolRecord
spool = Spool(sys.argv[1], max_bytes=10**7, segment_bytes=4096, fsync_interval=0.0)
spool.open()
spool.append([SpoolRecord(b"k", (), b"v%d" % i, 0) for i in range(10)])
print("READY", flush=True)
time.sleep(600)
"""


def test_a_second_process_on_a_spool_is_refused_naming_the_holder_until_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "READY"
        with pytest.raises(SpoolInUseError, match=f"in use by pid {holder.pid} on "):
            open_spool(tmp_path)
        # Refused before it read or wrote anything: the holder's segment is all there is.
        assert len(list(tmp_path.glob(f"*{SEGMENT_SUFFIX}"))) == 1
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait(10)
    finally:
        holder.kill()
    again = open_spool(tmp_path)
    assert again.recovered_ids == 10
    assert [r.record.value for r in read_all(again)] == [b"v%d" % i for i in range(10)]


def test_a_closed_spool_is_free_for_the_next_process(tmp_path):
    first = open_spool(tmp_path)
    first.append([record(i) for i in range(5)])
    with pytest.raises(SpoolInUseError):
        open_spool(tmp_path)  # another open file of this process counts as another holder
    first.close()
    second = open_spool(tmp_path)
    assert [r.record for r in read_all(second)] == [record(i) for i in range(5)]
    assert (tmp_path / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} on ")
