"""Section 3 of the report, the inference log: records/s into the broker from one process, per
producer compression."""

from __future__ import annotations

from bench.report.cells import notes_lines
from bench.report.results import FailedLogRun, LogPart, Skipped


def inference_log_lines(part: LogPart | Skipped) -> list[str]:
    lines = notes_lines(part.notes)
    if isinstance(part, Skipped):
        return lines
    lines += [
        "",
        "| producer compression | records | value bytes | s to all acked | records/s "
        "| on topic (distinct) | encode µs/record | submit µs/record |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in part.runs:
        if isinstance(run, FailedLogRun):
            lines.append(f"| {run.compression} | failed: {run.error[-200:]} |")
            continue
        lines.append(
            f"| {run.compression} | {run.records:,} | {run.record_value_bytes} "
            f"| {run.seconds_to_all_acked} | **{run.records_per_s:,}** "
            f"| {run.records_on_topic:,} ({run.distinct_records_on_topic:,}) "
            f"| {run.encode_us_per_record} | {run.submit_us_per_record} |"
        )
    return lines
