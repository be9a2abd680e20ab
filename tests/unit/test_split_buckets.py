"""The split's bucket table (modelserving.split_buckets): a change of weights moves the fewest
buckets, and never a caller between two versions whose weights did not change."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from modelserving.split_buckets import BUCKETS, is_table_of, laid_end_to_end, moved_least


@st.composite
def weightings(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Up to five distinct versions whose weights sum to 100 (zero weights allowed)."""
    versions = draw(st.lists(st.integers(1, 9), min_size=1, max_size=5, unique=True))
    n = len(versions) - 1
    cuts = sorted(draw(st.lists(st.integers(0, BUCKETS), min_size=n, max_size=n)))
    bounds = [0, *cuts, BUCKETS]
    return [(v, bounds[i + 1] - bounds[i]) for i, v in enumerate(versions)]


def test_a_first_split_lays_the_weights_end_to_end():
    assert laid_end_to_end([(3, 90), (4, 10)]) == (3,) * 90 + (4,) * 10


def test_changing_one_weight_leaves_the_callers_of_the_others_where_they_were():
    # 50/25/25 to 40/25/35: version 2 keeps its buckets; laid end to end they would shift by 10.
    before = laid_end_to_end([(1, 50), (2, 25), (3, 25)])
    after = moved_least(before, [(1, 40), (2, 25), (3, 35)])
    moved = [b for b in range(BUCKETS) if before[b] != after[b]]
    assert moved == list(range(40, 50))
    assert {after[b] for b in moved} == {3}
    assert laid_end_to_end([(1, 40), (2, 25), (3, 35)])[50:75] != before[50:75]


@given(weightings(), weightings())
def test_a_new_table_has_the_new_weights_and_moves_no_more_buckets_than_it_must(old, new):
    before = laid_end_to_end(old)
    after = moved_least(before, new)
    assert is_table_of(after, new)
    have, want = Counter(before), dict(new)
    least = sum(max(0, count - want.get(version, 0)) for version, count in have.items())
    assert sum(b != a for b, a in zip(before, after, strict=True)) == least
    # A version whose share did not shrink keeps every bucket it had.
    for version, count in have.items():
        if want.get(version, 0) >= count:
            assert all(a == version for b, a in zip(before, after, strict=True) if b == version)


@given(weightings())
def test_a_table_of_the_same_weights_is_kept_as_it_is(weights):
    table = moved_least(laid_end_to_end(weights[::-1]), weights)
    assert moved_least(table, weights) == table


def test_a_table_that_does_not_match_its_weights_is_not_one():
    assert not is_table_of((3,) * 100, [(3, 90), (4, 10)])
    assert not is_table_of((3,) * 90 + (5,) * 10, [(3, 90), (4, 10)])
    assert not is_table_of((3,) * 99, [(3, 99), (4, 1)])
