"""The routing file and the split made of it: the contract's file parses and bad ones are refused
naming the entry; buckets are laid out by weight, a weight change moves only the buckets whose
owner changed, a version that is not AVAILABLE lends its buckets and gets them back; the hashes
spread keys evenly and independently."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelserving_sidecar.routing.split import (
    BUCKETS,
    Routing,
    RoutingError,
    ShadowVersion,
    SplitTable,
    StickyBy,
    WeightedVersion,
    bucket_of,
    owners,
    parse_routing,
    shadow_point,
    split_buckets,
)

CONTRACT_EXAMPLE = """
versions:
  - {version: 3, weight: 90, labels: [stable]}
  - {version: 4, weight: 10, labels: [canary]}
shadow: {version: 5, percent: 10}
sticky: {by: header, header: x-session-id}
"""


def routing(*weights: tuple[int, int], shadow: ShadowVersion | None = None) -> Routing:
    return Routing(tuple(WeightedVersion(v, w) for v, w in weights), shadow)


def test_the_contracts_routing_file_parses():
    parsed = parse_routing(yaml.safe_load(CONTRACT_EXAMPLE))
    assert parsed == Routing(
        (WeightedVersion(3, 90, ("stable",)), WeightedVersion(4, 10, ("canary",))),
        ShadowVersion(5, 10),
        StickyBy.HEADER,
        "x-session-id",
    )
    assert [parsed.role_of(v) for v in (3, 4, 5)] == ["stable", "canary", "stable"]
    assert parsed.labels() == {"stable": 3, "canary": 4}


def test_a_serving_of_one_version_renders_all_traffic_to_it():
    data = {"versions": [{"version": 7, "weight": 100, "labels": []}], "sticky": {"by": "none"}}
    assert parse_routing(data) == Routing.one_version(7)


@pytest.mark.parametrize(
    "data, error",
    [
        ({"versions": []}, "versions: expected a list of one or more versions"),
        ({"versions": [{"version": 1, "weight": 90}]}, "versions: the weights sum to 90, not 100"),
        ({"versions": [{"version": 1, "weight": 101}]}, "versions[0].weight: expected an integer"),
        ({"versions": [{"version": -1, "weight": 100}]}, "versions[0].version: expected a version"),
        (
            {"versions": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]},
            "versions: a version is listed twice",
        ),
        (
            {"versions": [{"version": 1, "weight": 100, "labels": ["Canary"]}]},
            "versions[0].labels: 'Canary' is not a label",
        ),
        (
            {
                "versions": [
                    {"version": 1, "weight": 50, "labels": ["a"]},
                    {"version": 2, "weight": 50, "labels": ["a"]},
                ]
            },
            "labels: a on more than one version",
        ),
        (
            {"versions": [{"version": 1, "weight": 100}], "shadow": {"version": 1, "percent": 5}},
            "shadow.version: 1 is also a weighted version",
        ),
        (
            {"versions": [{"version": 1, "weight": 100}], "shadow": {"version": 2, "percent": 0}},
            "shadow.percent: expected an integer from 1 to 100",
        ),
        (
            {"versions": [{"version": 1, "weight": 100}], "sticky": {"by": "cookie"}},
            "sticky.by: 'cookie' is not one of header, caller, none",
        ),
        (
            {"versions": [{"version": 1, "weight": 100}], "sticky": {"by": "header"}},
            "sticky.header: expected a header name",
        ),
        (
            {"versions": [{"version": 1, "weight": 100}], "mirror": {}},
            "routing: unknown key(s) mirror",
        ),
    ],
)
def test_a_bad_routing_file_is_refused_naming_the_entry(data, error):
    with pytest.raises(RoutingError) as refused:
        parse_routing(data)
    assert str(refused.value).startswith(error)


def test_buckets_are_laid_out_by_weight_in_the_listed_order():
    table = owners(routing((3, 90), (4, 10)))
    assert table == (3,) * 90 + (4,) * 10
    assert owners(routing((1, 34), (2, 33), (3, 33))).count(2) == 33


def test_a_weight_change_moves_only_the_keys_whose_bucket_changed_owner():
    before = split_buckets(routing((3, 90), (4, 10)), frozenset({3, 4}))
    after = split_buckets(routing((3, 80), (4, 20)), frozenset({3, 4}))
    keys = [f"session-{i}" for i in range(10_000)]
    moved = [k for k in keys if before[bucket_of(k)] != after[bucket_of(k)]]
    assert {before[bucket_of(k)] for k in moved} == {3}
    assert {bucket_of(k) for k in moved} == set(range(80, 90))
    assert 0.08 < len(moved) / len(keys) < 0.12


def test_a_version_not_available_lends_its_buckets_and_gets_them_back():
    canary = routing((3, 90), (4, 10))
    assert split_buckets(canary, frozenset({3})) == (3,) * 100
    assert split_buckets(canary, frozenset({3, 4})) == owners(canary)
    three_way = routing((1, 50), (2, 30), (3, 20))
    lent = split_buckets(three_way, frozenset({2, 3}))
    # Version 1's 50 buckets go to 2 and 3 as 30:20; their own buckets stay theirs.
    assert (lent.count(2), lent.count(3)) == (60, 40)
    assert lent[50:] == owners(three_way)[50:]
    # None of the weighted versions AVAILABLE: TF Serving's own error is what callers get.
    assert split_buckets(canary, frozenset()) == owners(canary)
    assert split_buckets(canary, frozenset({9})) == owners(canary)


@st.composite
def weights_and_available(draw) -> tuple[Routing, frozenset[int]]:
    count = draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    available = draw(st.sets(st.integers(1, count + 1)))
    return routing(*((i + 1, w) for i, w in enumerate(weights))), frozenset(available)


@given(weights_and_available())
def test_lent_buckets_go_only_to_available_versions_in_proportion(case):
    routed, available = case
    own = owners(routed)
    table = split_buckets(routed, available)
    lenders = {v.version: v.weight for v in routed.versions if v.version in available and v.weight}
    if not lenders:
        assert table == own
        return
    # An available owner keeps its buckets; every bucket is served by an available version.
    assert all(table[b] == own[b] for b in range(BUCKETS) if own[b] in available)
    assert set(table) <= set(lenders)
    # The lent buckets are shared as the lenders' weights are, to within one bucket each.
    lent = [b for b in range(BUCKETS) if own[b] not in available]
    total = sum(lenders.values())
    for version, weight in lenders.items():
        got = sum(1 for b in lent if table[b] == version)
        assert abs(got - len(lent) * weight / total) <= 1


def test_keys_spread_evenly_over_the_buckets():
    # Sequential keys, the hard case for a weak hash: each bucket within 5 sigma of its mean.
    n = 100_000
    counts = [0] * BUCKETS
    for i in range(n):
        counts[bucket_of(f"user-{i}")] += 1
    mean, sigma = n / BUCKETS, math.sqrt(n * (1 / BUCKETS) * (1 - 1 / BUCKETS))
    assert max(abs(c - mean) for c in counts) < 5 * sigma


def test_the_shadows_share_is_independent_of_the_split():
    ids = [f"0193f0a2-1c3d-7e4f-8a9b-{i:012x}" for i in range(20_000)]
    canary = [i for i in ids if bucket_of(i) >= 90]
    shadowed = [i for i in canary if shadow_point(i) < 10]
    # 10% of the canary's requests are copied, as of everyone's (4.5 sigma of a binomial).
    p, n = 0.1, len(canary)
    assert abs(len(shadowed) - p * n) < 4.5 * math.sqrt(n * p * (1 - p))


def test_the_split_table_is_ready_for_the_request_path():
    parsed = parse_routing(yaml.safe_load(CONTRACT_EXAMPLE))
    table = SplitTable.build("mnist", parsed, frozenset({3, 4, 5}))
    assert table.only is None
    assert table.buckets[0].paths["predict"] == "/v1/models/mnist/versions/3:predict"
    assert (table.buckets[95].version, table.buckets[95].role) == (4, "canary")
    assert table.by_label["canary"] is table.by_version[4]
    assert (table.shadow.version, table.shadow_percent) == (5, 10)
    assert table.sticky_header == "x-session-id" and not table.sticky_caller
    assert table.weighted == {3, 4}
    alone = SplitTable.build("mnist", parsed, frozenset({3}))
    assert alone.only is alone.by_version[3]
    other = table.version("mnist", 8)
    assert (other.paths["status"], other.known) == ("/v1/models/mnist/versions/8", False)


def test_the_routing_files_bucket_table_is_what_the_split_follows():
    table = [4] * 10 + [3] * 90  # a table the operator moved, not the listed order's
    routed = parse_routing({"versions": ROUTING_VERSIONS, "buckets": table})
    assert owners(routed) == tuple(table)
    assert split_buckets(routed, frozenset({3, 4})) == tuple(table)


@pytest.mark.parametrize(
    "buckets",
    [[3] * 100, [3] * 90 + [5] * 10, [3] * 89 + [4] * 10, "all", [3] * 90 + [True] * 10],
)
def test_a_bucket_table_that_does_not_match_the_weights_is_refused(buckets):
    with pytest.raises(RoutingError, match=r"^buckets: expected 100 version numbers"):
        parse_routing({"versions": ROUTING_VERSIONS, "buckets": buckets})


ROUTING_VERSIONS = [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]
