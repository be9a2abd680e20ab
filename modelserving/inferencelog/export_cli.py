"""`modelserving logs export TOPIC -o FILE`: write the inference log records of a time range to
a file for data teams, as JSON lines (the lines `modelserving logs` prints) or Parquet (typed
columns, `inferencelog_parquet`).

`--since` and `--until` select by the record's requestTimestamp (since inclusive, until
exclusive, so that consecutive ranges neither overlap nor leave a gap), as ISO 8601 times
(UTC unless they say otherwise), milliseconds since the epoch, or durations before now (`90m`,
`1h30m`, `2d`). The connection and filter flags are those of `modelserving logs`. On a
terminal, stderr shows a progress line updated in place; elsewhere nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import re
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from modelserving.inferencelog.cli import (
    add_connection_arguments,
    add_filter_arguments,
    connection,
    decode_failure,
    duplicates_note,
    reader_query,
    schema_registry,
)
from modelserving.inferencelog.export import ExportFormat, export_records
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import ReadProgress, TopicNotFoundError, read_inference_log
from modelserving.inferencelog.record import InferenceLogDecodeError
from modelserving.inferencelog.schema_registry import SchemaRegistry
from modelserving.inferencelog.writer_schemas import SchemaRegistryUnavailable
from modelserving.kafka_security.diagnosis import KafkaRefused
from modelserving.kafka_security.settings import KafkaSecurity

# How long past --until a record may arrive and still be found (see --allowed-lateness).
DEFAULT_ALLOWED_LATENESS = "5m"
# How often the progress line is redrawn on a terminal.
PROGRESS_INTERVAL_S = 0.25

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", metavar="TOPIC", help="the serving's inference log topic")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FILE",
        help="the file to write (replaced whole once the export is complete; nothing is left "
        "behind when it fails)",
    )
    parser.add_argument(
        "--format",
        choices=[f.value for f in ExportFormat],
        help="jsonl: one JSON object a line, as `modelserving logs` prints; parquet: typed "
        "columns (default: by FILE's extension, .parquet or .jsonl)",
    )
    parser.add_argument(
        "--since",
        type=point_in_time,
        metavar="TIME",
        help="only records whose requestTimestamp is at or after TIME: ISO 8601 "
        "(2026-12-01T10:00:00Z; UTC when no offset is given), milliseconds since the epoch, "
        "or a duration before now (90s, 15m, 1h30m, 2d) (default: the oldest record kept)",
    )
    parser.add_argument(
        "--until",
        type=point_in_time,
        metavar="TIME",
        help="only records whose requestTimestamp is before TIME, in the forms of --since "
        "(default: up to the end of the topic when the export starts)",
    )
    parser.add_argument(
        "--allowed-lateness",
        type=duration_argument,
        default=duration_argument(DEFAULT_ALLOWED_LATENESS),
        metavar="DURATION",
        help="with --until: how long after TIME a record stamped before it may have reached "
        "Kafka (re-sent after a sidecar crash, or held in the spool through a broker outage); "
        f"the export reads that far past TIME to find such records (default: "
        f"{DEFAULT_ALLOWED_LATENESS})",
    )
    add_connection_arguments(parser)
    add_filter_arguments(parser)


def parse_duration(text: str) -> int:
    """A duration such as `90s`, `15m`, `1h30m`, `2d` or `500ms`, in milliseconds."""
    parts = _DURATION.findall(text)
    if not text or "".join(n + unit for n, unit in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h30m or 2d")
    return sum(int(n) * _UNITS_MS[unit] for n, unit in parts)


def parse_time(text: str, now_ms: int) -> int:
    """A point in time as milliseconds since the epoch: `now`, a duration before `now_ms`
    (`1h`), milliseconds since the epoch, or an ISO 8601 date or time (UTC unless it says)."""
    text = text.strip()
    if text == "now":
        return now_ms
    if text.isdigit():
        return int(text)
    if _DURATION.match(text):
        try:
            return now_ms - parse_duration(text)
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO 8601 time (2026-12-01T10:00:00Z), "
            "milliseconds since the epoch, or a duration before now (1h, 30m, 2d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def point_in_time(text: str) -> int:
    """`--since`/`--until` as argparse reads them."""
    try:
        return parse_time(text, int(time.time() * 1000))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_argument(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_time(ms: int) -> str:
    """A time as the summary shows it: ISO 8601 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def progress_line(written: int, progress: ReadProgress, elapsed_s: float) -> str:
    """The progress line: records written, how much of the range is read, and the rate."""
    if not progress.partitions:
        return f"finding the range on Kafka, {timedelta(seconds=int(elapsed_s))}"
    rate = progress.read / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{written:,} records written, {progress.read:,}"
    if progress.to_read:
        share = min(progress.read / progress.to_read, 1.0)
        line += f" of {progress.to_read:,} read ({share:.0%})"
    else:
        line += " read"
    return f"{line}, {rate:,.0f} records/s, {timedelta(seconds=int(elapsed_s))}"


class ProgressDisplay:
    """A line on a terminal redrawn in place while the export runs; nothing elsewhere."""

    def __init__(self, stream: TextIO, progress: ReadProgress) -> None:
        self._stream = stream
        self._progress = progress
        self._started = time.monotonic()
        self.written = 0
        self.shown = stream.isatty()

    def update(self, written: int) -> None:
        self.written = written

    def draw(self) -> None:
        if self.shown:
            elapsed = time.monotonic() - self._started
            line = progress_line(self.written, self._progress, elapsed)
            self._stream.write(f"\r\x1b[K{line}")
            self._stream.flush()

    def finish(self, output: Path | None) -> None:
        if not self.shown:
            return
        self.draw()
        self._stream.write(f"\n{'written to ' + str(output) if output else 'nothing written'}\n")
        self._stream.flush()

    async def keep_drawing(self) -> None:
        while self.shown:
            self.draw()
            await asyncio.sleep(PROGRESS_INTERVAL_S)


def export_query(args: argparse.Namespace) -> InferenceLogQuery:
    """What an export reads: the records the shared flags keep, in the time range asked for
    (the whole topic without one), from a topic that must exist."""
    return replace(
        reader_query(args),
        from_beginning=True,
        since_ms=args.since,
        until_ms=args.until,
        allowed_lateness_ms=args.allowed_lateness,
        topic_must_exist=True,
    )


async def _export(
    args: argparse.Namespace,
    servers: str,
    security: KafkaSecurity,
    registry: SchemaRegistry | None,
    export_format: ExportFormat,
    progress: ReadProgress,
) -> int:
    display = ProgressDisplay(sys.stderr, progress)
    records = read_inference_log(
        args.topic,
        servers,
        export_query(args),
        security=security,
        schema_registry=registry,
        progress=progress,
    )
    drawing = asyncio.create_task(display.keep_drawing())
    try:
        written = await export_records(records, args.output, export_format, display.update)
    except BaseException:
        display.finish(None)
        raise
    finally:
        drawing.cancel()
    display.finish(args.output)
    return written


def run(args: argparse.Namespace) -> int:
    export_format = ExportFormat(args.format) if args.format else ExportFormat.for_path(args.output)
    if export_format is None:
        return _fail(f"say --format jsonl or --format parquet for {args.output}", code=2)
    if args.since is not None and args.until is not None and args.since >= args.until:
        return _fail(
            f"--since ({format_time(args.since)}) must be before --until "
            f"({format_time(args.until)})",
            code=2,
        )
    if export_format is ExportFormat.PARQUET and importlib.util.find_spec("arro3.io") is None:
        return _fail("Parquet needs the parquet extra: pip install 'modelserving[parquet]'")
    # The brokers and security the flags say (--bootstrap-servers, or --command-config's), and
    # the schema registry; what cannot work exits here, saying why.
    servers, security = connection(args)
    registry = schema_registry(args)
    progress = ReadProgress()
    # What goes wrong with Kafka ends the export with one message below; aiokafka's own log
    # lines about it (a failed connect, each retry) would only repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_export(args, servers, security, registry, export_format, progress))
    except KeyboardInterrupt:
        return _fail("interrupted: nothing written", code=130)
    except TopicNotFoundError as exc:
        return _fail(str(exc))
    except InferenceLogDecodeError as exc:
        return _fail(decode_failure(exc))
    except SchemaRegistryUnavailable as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.output}: {exc.strerror or exc}")
    except KafkaRefused as exc:  # a secured Kafka refused the connection: it says why
        return _fail(str(exc))
    except Exception as exc:
        from aiokafka.errors import KafkaConnectionError, KafkaError

        if isinstance(exc, KafkaConnectionError):
            return _fail(f"cannot reach Kafka at {servers}")
        if isinstance(exc, KafkaError):
            return _fail(f"Kafka at {servers}: {exc}")
        raise
    if args.dedupe:
        print(duplicates_note(progress.duplicates_dropped, args.dedupe), file=sys.stderr)
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"modelserving logs export: error: {message}", file=sys.stderr)
    return code
