"""How operator replicas take turns: the oldest is active, priorities differ, and the peering
lifetime is one setting shared by the operator and the chart."""

from __future__ import annotations

import argparse

import pytest
import yaml

from modelserving_operator.runtime.peering import MIN_LIFETIME_SECONDS, peering_priority
from modelserving_operator.settings import (
    OperatorSettings,
    SettingsError,
    configure_parser,
    settings_from,
)
from tests.support import REPO


def parse(*flags: str, **environ: str) -> OperatorSettings:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return settings_from(parser.parse_args(list(flags)), environ)


def test_the_replica_started_first_has_the_highest_priority():
    first, second = peering_priority(1_764_561_600.000001), peering_priority(1_764_561_600.000002)
    assert first > second


def test_replicas_started_in_the_same_second_get_different_priorities():
    assert len({peering_priority(1_764_561_600 + i / 1000) for i in range(1000)}) == 1000


def test_the_peering_lifetime_is_read_from_its_flag_and_variable():
    assert parse().peering_lifetime_seconds == 15
    assert parse("--peering-lifetime", "30").peering_lifetime_seconds == 30
    assert parse(MODELSERVING_PEERING_LIFETIME="20").peering_lifetime_seconds == 20


@pytest.mark.parametrize("value", [str(MIN_LIFETIME_SECONDS - 1), "0", "soon"])
def test_a_lifetime_too_short_or_not_a_number_is_refused_naming_the_flag(value):
    with pytest.raises(SettingsError, match="--peering-lifetime"):
        parse("--peering-lifetime", value)


def test_the_charts_default_lifetime_is_the_operators():
    values = yaml.safe_load((REPO / "charts/modelserving/values.yaml").read_text())
    assert values["peering"]["lifetimeSeconds"] == OperatorSettings().peering_lifetime_seconds
