"""localenv's ports for a part's listeners: each free, all different (two listeners of a part on
one port fail its start: Kafka's StorageTool refuses such a configuration), and a state that
recorded one port twice repaired rather than kept."""

from __future__ import annotations

from tests.support.environment import localenv


def test_a_parts_listeners_get_different_free_ports():
    names = [f"listener-{i}" for i in range(50)]
    ports = localenv.free_ports(names)
    assert list(ports) == names
    assert len(set(ports.values())) == len(names)
    assert all(port in localenv.FREE_PORTS and localenv.port_free(port) for port in ports.values())


def test_kept_ports_stay_but_one_kept_twice_gets_another():
    ports = localenv.free_ports(
        ["broker", "ssl", "sasl_ssl"], {"broker": 21001, "ssl": 21327, "sasl_ssl": 21327}
    )
    assert (ports["broker"], ports["ssl"]) == (21001, 21327)
    assert ports["sasl_ssl"] not in (21001, 21327)
