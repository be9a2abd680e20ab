"""Section 2 of the report, what the log keeps when something fails: the log's destination down
for 10 s (KServe's agent, our sidecar), and our sidecar killed with SIGKILL and restarted."""

from __future__ import annotations

from bench.report.cells import notes_lines
from bench.report.results import CrashPart, Failed, OutagePart, Skipped


def outage_lines(part: OutagePart | Skipped) -> list[str]:
    lines: list[str] = []
    if isinstance(part, Skipped):
        return lines  # the part failed whole: its section stays empty, as it always has
    agent = part.kserve_agent
    if isinstance(agent, Failed):
        lines.append(f"- KServe agent: failed: `{agent.error[-300:]}`")
    elif agent is not None:
        lines.append(
            f"- KServe agent, logger on, HTTP sink down {agent.sink_down_seconds} s: "
            f"{agent.requests_answered:,} requests answered, "
            f"{agent.events_delivered:,} of {agent.events_expected:,} CloudEvents "
            f"reached the sink, **{agent.events_lost:,} lost** (reference: about 20,000); "
            f"peak RSS {agent.rss_peak_mib} MiB; p99 {agent.latency.p99_ms:.2f} ms."
        )
    ours = part.sidecar
    if isinstance(ours, Failed):
        lines.append(f"- Our sidecar: failed: `{ours.error[-300:]}`")
    elif ours is not None:
        lines.append(
            f"- Our sidecar, log on, Kafka broker down {ours.broker_down_seconds} s: "
            f"{ours.requests_answered:,} requests answered, "
            f"{ours.records_delivered:,} records on the topic, "
            f"**{ours.records_lost:,} lost** (target: 0); peak RSS "
            f"{ours.rss_peak_mib} MiB; p99 {ours.latency.p99_ms:.2f} ms."
        )
    return lines


def crash_lines(part: CrashPart | Skipped) -> list[str]:
    if isinstance(part, Skipped):
        return notes_lines(part.notes)
    if part.buffered is None and part.spooled is None:
        return []
    lines = [
        "The sidecar (API-key auth, log on into the real broker) answers a steady 1,000 rps, is "
        "killed with SIGKILL 3 s in, and is started again on the same spool; then the topic is "
        "read whole. `spooled` (the default: run with the defaults, the durability left unsaid) "
        "answers only once the record is in the spool file; `buffered` answers at once and "
        "writes within the flush interval (5 ms).",
        "",
        "| durability | rate reached | answered 200 before the kill | records lost "
        "| lost ones answered within, ms of the kill | records sent twice | bound (in flight) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for durability, run in (("buffered", part.buffered), ("spooled", part.spooled)):
        if run is None:
            continue
        if isinstance(run, Failed):
            lines.append(f"| {durability} | failed: `{run.error[-200:]}` |")
            continue
        lines.append(
            f"| {durability} | {run.rate_reached:,} | {run.answered_before_kill:,} "
            f"| **{run.records_lost:,}** | {run.lost_answered_within_ms_of_kill} "
            f"| **{run.records_resent:,}** | {run.max_in_flight_records:,} |"
        )
    return lines
