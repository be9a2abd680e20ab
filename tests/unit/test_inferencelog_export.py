"""`modelserving logs export` without a broker: the times and durations it takes, the progress
line, the format chosen by a file's extension, the flags it shares with `logs`, a file that
appears only whole, and Parquet columns of the right types read back by another library."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest

from modelserving.cli import build_parser, main
from modelserving.inferencelog.export import ExportFormat, atomic_file, export_records
from modelserving.inferencelog.export_cli import (
    ProgressDisplay,
    format_time,
    parse_duration,
    parse_time,
    progress_line,
)
from modelserving.inferencelog.reader import LoggedInference, ReadProgress
from modelserving.inferencelog.record import InferenceLogRecord

NOW = 1_764_583_200_000  # 2025-12-01T10:00:00Z


def logged(i: int) -> LoggedInference:
    record = InferenceLogRecord(
        model_id=17,
        model_name="mnist",
        model_version=1 + i % 2,
        request_timestamp=NOW + i,
        response_http_code=(200, 503)[i % 2],
        inference_request=f'{{"instances": [[{i}]]}}',
        inference_response="" if i % 3 else '{"predictions": [[0.5]]}',
    )
    headers = {"request-id": f"req-{i}", "caller": "team-ä"}
    return LoggedInference(record, f"req-{i}" if i else None, headers, "t", i % 3, i, NOW + i)


def export_args(*argv: str):
    full = ["logs", "export", *argv, "--bootstrap-servers", "kafka:9092"]
    return build_parser(full).parse_args(full)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("now", NOW),
        ("90s", NOW - 90_000),
        ("1h30m", NOW - 5_400_000),
        ("2d", NOW - 2 * 86_400_000),
        ("1764583200000", NOW),
        ("2025-12-01T10:00:00Z", NOW),
        ("2025-12-01T10:00:00", NOW),
        ("2025-12-01T11:00:00+01:00", NOW),
        ("2025-12-01 10:00:00.250Z", NOW + 250),
        ("2025-12-01", NOW - 10 * 3_600_000),
    ],
)
def test_times_are_read_in_every_form_the_help_names(text, ms):
    assert parse_time(text, NOW) == ms


@pytest.mark.parametrize("text", ["yesterday", "1x", "1h-5m", "", "2025-13-01"])
def test_a_bad_time_is_refused_with_what_to_give(text):
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text, NOW)


def test_a_bad_time_on_the_command_line_is_an_error_of_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_args("t", "-o", "x.jsonl", "--since", "last tuesday")
    assert exit_info.value.code == 2
    assert "--since: 'last tuesday' is not a time" in capsys.readouterr().err


def test_durations():
    assert parse_duration("500ms") == 500
    assert parse_duration("1w2d") == 9 * 86_400_000
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_format_time_is_iso_utc():
    assert format_time(NOW + 5) == "2025-12-01T10:00:00.005Z"


def test_progress_line_says_records_share_and_rate():
    progress = ReadProgress(partitions=3, to_read=120_000, read=48_000)
    line = progress_line(12_345, progress, 6.0)
    assert line == (
        "12,345 records written, 48,000 of 120,000 read (40%), 8,000 records/s, 0:00:06"
    )
    assert progress_line(0, ReadProgress(), 1.5) == "finding the range on Kafka, 0:00:01"
    unbounded = progress_line(0, ReadProgress(partitions=1), 0.0)
    assert unbounded == "0 records written, 0 read, 0 records/s, 0:00:00"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_in_place_on_a_terminal_and_not_elsewhere():
    progress = ReadProgress(partitions=1, to_read=10, read=5)
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        display = ProgressDisplay(stream, progress)
        display.update(5)
        display.draw()
        display.draw()
        display.finish(Path("out.parquet"))
    assert pipe.getvalue() == ""
    drawn = terminal.getvalue()
    assert drawn.count("\r\x1b[K5 records written, 5 of 10 read (50%)") == 3
    assert drawn.endswith("\nwritten to out.parquet\n")


def test_format_follows_the_extension_unless_said():
    assert ExportFormat.for_path(Path("a.parquet")) is ExportFormat.PARQUET
    assert ExportFormat.for_path(Path("a.JSONL")) is ExportFormat.JSON_LINES
    assert ExportFormat.for_path(Path("a.csv")) is None
    assert export_args("t", "-o", "a.csv", "--format", "parquet").format == "parquet"


def test_export_without_a_known_extension_or_format_says_what_to_give(capsys, tmp_path):
    argv = ["logs", "export", "t", "-o", str(tmp_path / "a.out"), "--bootstrap-servers", "k:1"]
    assert main(argv) == 2
    assert "--format jsonl or --format parquet" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_since_after_until_is_refused(capsys, tmp_path):
    argv = [
        "logs",
        "export",
        "t",
        "-o",
        str(tmp_path / "a.jsonl"),
        "--bootstrap-servers",
        "k:1",
        "--since",
        "2025-12-01T11:00:00Z",
        "--until",
        "2025-12-01T10:00:00Z",
    ]
    assert main(argv) == 2
    assert "--since (2025-12-01T11:00:00.000Z) must be before --until" in capsys.readouterr().err


def test_export_shares_the_logs_filters():
    args = export_args(
        "t",
        "-o",
        "a.parquet",
        "--model",
        "mnist",
        "--model-version",
        "3",
        "--status",
        "5xx",
        "--status",
        "404",
        "--header",
        "caller=team-a",
        "--dedupe",
    )
    assert (args.model, args.model_version, args.dedupe) == ("mnist", 3, 100_000)
    assert frozenset().union(*args.status) == frozenset([404, *range(500, 600)])
    assert args.header == ["caller=team-a"]
    logs = build_parser(["logs", "t", "--status", "200", "--bootstrap-servers", "k:1"])
    assert logs.parse_args(["logs", "t", "--status", "200", "--bootstrap-servers", "k:1"]).status


def test_a_topic_named_export_is_still_read_by_logs():
    argv = ["logs", "--from-beginning", "export", "--bootstrap-servers", "k:1"]
    args = build_parser(argv).parse_args(argv)
    assert args.topic == "export" and getattr(args, "subcommand", None) is None


@pytest.mark.parametrize("bad", ["99", "600", "6xx", "2XY", "ok"])
def test_status_refuses_what_is_not_a_code(bad, capsys):
    with pytest.raises(SystemExit):
        export_args("t", "-o", "a.jsonl", "--status", bad)
    assert "--status" in capsys.readouterr().err


def test_atomic_file_appears_only_whole(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("the previous export\n")
    with pytest.raises(RuntimeError), atomic_file(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the broker went away")
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    with atomic_file(target) as temporary:
        temporary.write_text("whole\n")
    assert target.read_text() == "whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


async def records(count: int, fail_after: int | None = None) -> AsyncIterator[LoggedInference]:
    for i in range(count):
        if i == fail_after:
            raise ConnectionError("Kafka went away")
        yield logged(i)
        await asyncio.sleep(0)


async def test_parquet_columns_are_typed_and_read_back_by_pyarrow(tmp_path):
    path = tmp_path / "out.parquet"
    seen: list[int] = []
    written = await export_records(records(2500), path, ExportFormat.PARQUET, seen.append)
    assert written == 2500 and seen == [1024, 2048, 2500]
    table = pyarrow.parquet.read_table(path)
    schema = table.schema
    assert schema.field("modelId").type == pyarrow.int32()
    assert schema.field("requestTimestamp").type == pyarrow.timestamp("ms", tz="UTC")
    assert schema.field("timestamp").type == pyarrow.timestamp("ms", tz="UTC")
    assert schema.field("offset").type == pyarrow.int64()
    assert schema.field("key").nullable and not schema.field("modelName").nullable
    rows = table.to_pylist()
    for i in (0, 1, 2, 2499):
        row, want = rows[i], logged(i)
        assert int(row["requestTimestamp"].timestamp() * 1000) == want.record.request_timestamp
        assert {h["key"]: h["value"] for h in row["headers"]} == want.headers
        assert row["key"] == want.key
        assert row["inferenceResponse"] == want.record.inference_response
        assert (row["partition"], row["offset"]) == (want.partition, want.offset)


async def test_a_read_that_fails_leaves_no_file_and_says_why(tmp_path):
    for export_format in ExportFormat:
        path = tmp_path / f"out.{export_format.value}"
        with pytest.raises(ConnectionError, match="Kafka went away"):
            await export_records(records(3000, fail_after=2000), path, export_format)
        assert list(tmp_path.iterdir()) == []


async def test_an_empty_range_gives_an_empty_file_of_each_format(tmp_path):
    assert await export_records(records(0), tmp_path / "e.jsonl", ExportFormat.JSON_LINES) == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert await export_records(records(0), tmp_path / "e.parquet", ExportFormat.PARQUET) == 0
    assert pyarrow.parquet.read_table(tmp_path / "e.parquet").num_rows == 0


def test_an_unreachable_kafka_is_one_clear_line_and_no_file(tmp_path):
    argv = ["logs", "export", "t", "-o", str(tmp_path / "a.parquet")]
    out = subprocess.run(
        [sys.executable, "-m", "modelserving.cli", *argv, "--bootstrap-servers", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr == "modelserving logs export: error: cannot reach Kafka at 127.0.0.1:1\n"
    assert list(tmp_path.iterdir()) == []


async def endless() -> AsyncIterator[LoggedInference]:
    i = 0
    while True:
        yield logged(i)
        i += 1
        await asyncio.sleep(0)


@pytest.mark.parametrize("export_format", list(ExportFormat))
async def test_an_export_stopped_midway_leaves_no_file(tmp_path, export_format):
    """Ctrl-C cancels the export's task: whatever was written so far goes with it."""
    path = tmp_path / f"out.{export_format.value}"
    some_written = asyncio.Event()
    export = asyncio.create_task(
        export_records(endless(), path, export_format, lambda n: n > 3000 and some_written.set())
    )
    await asyncio.wait_for(some_written.wait(), 60)
    export.cancel()
    with pytest.raises(asyncio.CancelledError):
        await export
    assert list(tmp_path.iterdir()) == []
