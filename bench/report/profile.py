"""Section 5 of the report: py-spy's profile of the sidecar's hot path, by own and by inclusive
time."""

from __future__ import annotations

from bench.report.cells import notes_lines
from bench.report.results import ProfilePart


def profile_lines(part: ProfilePart) -> list[str]:
    lines = notes_lines(part.notes)
    if part.top_own is None:
        return lines
    lines.append(f"- samples: {part.samples:,}")
    if part.own_time_by_package:
        lines.append(
            "- own time by package: "
            + ", ".join(f"{name} {share}%" for name, share in part.own_time_by_package)
        )
    lines += ["", "| function (own time) | % of samples |", "| --- | --- |"]
    lines += [f"| `{frame}` | {share} |" for frame, share in part.top_own]
    lines += ["", "| function (inclusive time) | % of samples |", "| --- | --- |"]
    lines += [f"| `{frame}` | {share} |" for frame, share in part.top_inclusive]
    return lines
