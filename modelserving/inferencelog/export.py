"""Writing inference log records to a file for data teams, as JSON lines or Parquet, so that a
failed export leaves no half file: the file is written under a temporary name beside its
destination, synced, and renamed to it only once every record is in it.

The records come from `read_inference_log` (a time range, filters); this module only writes
them (`modelserving logs export` is its command line).
"""

from __future__ import annotations

import asyncio
import enum
import os
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modelserving.inferencelog.reader import LoggedInference

# Records handed to the Parquet writer at a time (an Arrow record batch each).
BATCH_RECORDS = 1024


class ExportFormat(enum.Enum):
    """The kinds of file an export writes."""

    JSON_LINES = "jsonl"
    PARQUET = "parquet"

    @classmethod
    def for_path(cls, path: Path) -> ExportFormat | None:
        """The format a file name asks for by its extension, if it says."""
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return cls.PARQUET
        if suffix in (".jsonl", ".ndjson", ".json"):
            return cls.JSON_LINES
        return None


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` that becomes `path` once the block ends without error;
    on an error (or Ctrl-C) it is removed, and a file already at `path` stays as it was."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        # mkstemp makes the file readable by its owner only; the export gets the mode any
        # new file gets (what the umask leaves of rw-rw-rw-), as `>` in a shell would give.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def export_records(
    records: AsyncIterable[LoggedInference],
    path: Path,
    export_format: ExportFormat,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Write the records to `path` in `export_format`, atomically; return how many.

    `on_written` is told the count written so far after each batch (for a progress display).
    """
    counted = _Counter(on_written)
    with atomic_file(path) as temporary:
        if export_format is ExportFormat.PARQUET:
            await _write_parquet(counted.batches(records), temporary)
        else:
            await _write_json_lines(counted.batches(records), temporary)
    return counted.written


class _Counter:
    """Counts the records going by, in batches, and tells a listener."""

    def __init__(self, listener: Callable[[int], None] | None) -> None:
        self.written = 0
        self._listener = listener

    async def batches(
        self, records: AsyncIterable[LoggedInference]
    ) -> AsyncGenerator[list[LoggedInference]]:
        batch: list[LoggedInference] = []
        async for logged in records:
            batch.append(logged)
            if len(batch) >= BATCH_RECORDS:
                yield self._counted(batch)
                batch = []
        if batch:
            yield self._counted(batch)

    def _counted(self, batch: list[LoggedInference]) -> list[LoggedInference]:
        self.written += len(batch)
        if self._listener is not None:
            self._listener(self.written)
        return batch


async def _write_json_lines(batches: AsyncGenerator[list[LoggedInference]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        async for batch in batches:
            out.writelines(logged.to_json_line() + "\n" for logged in batch)


async def _write_parquet(batches: AsyncGenerator[list[LoggedInference]], path: Path) -> None:
    """The Parquet writer runs in a thread and pulls each batch from the Kafka read, which goes
    on in this event loop: the read never runs ahead of the writer by more than a batch."""
    from modelserving.inferencelog.parquet import write_records

    loop = asyncio.get_running_loop()
    read_failure: list[BaseException] = []
    reading: list[asyncio.Task[list[LoggedInference] | None]] = []
    # Set (in the loop) when the export is cancelled: a pull the writer asks for after that,
    # even one already on its way to the loop, ends the writer instead of reading on.
    stopping = threading.Event()

    async def next_batch() -> list[LoggedInference] | None:
        if stopping.is_set():
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        reading[:] = [task]
        try:
            return await anext(batches)
        except StopAsyncIteration:
            return None

    def pulled() -> Iterator[Sequence[LoggedInference]]:
        while True:
            try:
                batch = asyncio.run_coroutine_threadsafe(next_batch(), loop).result()
            except BaseException as exc:
                read_failure.append(exc)
                raise
            if batch is None:
                return
            yield batch

    writer = loop.run_in_executor(None, write_records, pulled(), path)
    try:
        await asyncio.shield(writer)
    except asyncio.CancelledError:
        # Ctrl-C: stop the read the writer waits for, and let the writer close the file before
        # it is removed.
        stopping.set()
        for task in reading:
            task.cancel()
        await asyncio.wait([writer])
        writer.exception()  # the writer's error is the Ctrl-C's: retrieved, not reported
        raise
    except Exception:
        # The writer reports a failure of the read as its own; the read's error says more.
        if read_failure:
            raise read_failure[0] from None
        raise
    finally:
        await batches.aclose()
