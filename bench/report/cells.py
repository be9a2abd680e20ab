"""How a figure is written in the report's tables: a number with its thousands, and a figure of
every pass side by side (`run 1 / run 2`), a failed pass as "failed"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.report.results import Failed, Pass


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def each_pass(
    runs: Sequence[Pass | Failed], show: Callable[[Pass], str], between: str = " / "
) -> str:
    """show(pass) of each pass; a failed pass as "failed", a figure it lacks as "-"."""
    values = []
    for run in runs:
        if isinstance(run, Failed):
            values.append("failed")
            continue
        try:
            values.append(show(run))
        except (KeyError, TypeError):  # a figure from after this run
            values.append("-")
    return between.join(values) if values else "-"


def both(runs: Sequence[Pass | Failed], get: Callable[[Pass], Any], digits: int = 2) -> str:
    """Every pass of one figure, `run 1 / run 2`."""
    return each_pass(runs, lambda run: fmt(get(run), digits))


def pairs(runs: Sequence[Pass | Failed], show: Callable[[Pass], str]) -> str:
    """show(pass) of each pass, `run 1 ; run 2` (for a cell that already holds a pair)."""
    return each_pass(runs, show, " ; ")


def over(
    runs: Sequence[Pass | Failed],
    base: Sequence[Pass | Failed],
    get: Callable[[Pass], float],
    digits: int,
) -> str:
    """get(pass) - get(the base's pass of the same pass number), `+x / +y`."""
    values = []
    for run, one in zip(runs, base, strict=False):
        if isinstance(run, Failed) or isinstance(one, Failed):
            values.append("failed")
            continue
        try:
            values.append(f"{get(run) - get(one):+,.{digits}f}")
        except (KeyError, TypeError, ZeroDivisionError):
            values.append("-")
    return " / ".join(values) if values else "-"


def notes_lines(notes: Sequence[str]) -> list[str]:
    return [f"- {note}" for note in notes]
