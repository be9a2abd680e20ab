"""The 100 buckets of a weighted split and the version owning each: the one table the operator
writes into the routing file and every sidecar of the serving routes by.

A first split lays the weights end to end in the listed order (90/10: buckets 0-89 to the
first version, 90-99 to the second). A change of weights moves as few buckets as it can: each
version keeps its lowest-numbered buckets up to its new weight, and only the buckets freed by
versions that lost weight (or left the list) go, lowest first, to versions that gained, in the
listed order. So a caller kept on one version by the sticky key stays there unless its own
version gave weight away; changing one weight never moves callers between two versions whose
weights did not change.
"""

from __future__ import annotations

from collections.abc import Sequence

BUCKETS = 100


def laid_end_to_end(weights: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """(version, weight) pairs, weights summing to BUCKETS: each bucket's owner, in order."""
    table: list[int] = []
    for version, weight in weights:
        table += [version] * weight
    return tuple(table)


def moved_least(previous: Sequence[int], weights: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The table for `weights` that differs from `previous` in the fewest buckets."""
    target = dict(weights)
    kept: dict[int, int] = {}
    table: list[int | None] = []
    for version in previous:
        if kept.get(version, 0) < target.get(version, 0):
            kept[version] = kept.get(version, 0) + 1
            table.append(version)
        else:
            table.append(None)  # freed: its version left the list or lost weight
    gaining = [(v, w - kept.get(v, 0)) for v, w in weights if w > kept.get(v, 0)]
    takers = iter([v for v, more in gaining for _ in range(more)])
    return tuple(version if version is not None else next(takers) for version in table)


def is_table_of(table: Sequence[int], weights: Sequence[tuple[int, int]]) -> bool:
    """Whether `table` gives each version as many buckets as its weight, and no other any."""
    return (
        len(table) == BUCKETS
        and all(table.count(version) == weight for version, weight in weights)
        and set(table) <= {version for version, weight in weights if weight}
    )
