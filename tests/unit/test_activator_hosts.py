"""The activator knows a serving by the Host a request names: its Service's DNS names, with or
without a port, and its Ingress's host; a name several servings claim names none of them."""

from __future__ import annotations

import pytest

from modelserving_sidecar.activator.hosts import (
    HostTable,
    ServingRef,
    Shared,
    normal_host,
    serving_of,
)

MNIST = ServingRef("demo", "mnist")


def modelserving(name: str, namespace: str, **spec) -> dict:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"auth": {"mode": "apiKey"}, **spec},
    }


@pytest.mark.parametrize(
    "host",
    [
        "mnist",
        "mnist.demo",
        "mnist.demo.svc",
        "mnist.demo.svc.cluster.local",
        "mnist.demo.svc:8080",
        "MNIST.Demo.SVC.cluster.local.:8080",
        "mnist.demo.svc.cluster.local.",
    ],
)
def test_every_name_of_the_service_names_the_serving(host):
    table = HostTable()
    table.put(serving_of(modelserving("mnist", "demo")))
    found = table.lookup(host)
    assert found is not None and not isinstance(found, Shared)
    assert found.ref == MNIST
    assert found.auth_mode == "apiKey"
    assert found.uid == "uid-mnist"


@pytest.mark.parametrize(
    "host", ["mnist.other", "mnist.demo.svc.example.org", "fraud.demo.svc", "", "10.0.0.7:8080"]
)
def test_a_host_of_no_serving_names_none(host):
    table = HostTable()
    table.put(serving_of(modelserving("mnist", "demo")))
    assert table.lookup(host) is None


def test_the_cluster_domain_is_the_one_given():
    table = HostTable()
    table.put(serving_of(modelserving("mnist", "demo"), "corp.example"))
    assert table.lookup("mnist.demo.svc.corp.example") is not None
    assert table.lookup("mnist.demo.svc.cluster.local") is None


def test_the_ingress_host_names_the_serving_only_when_its_ingress_is_enabled():
    table = HostTable()
    table.put(
        serving_of(modelserving("mnist", "demo", ingress={"enabled": True, "host": "ml.corp"}))
    )
    table.put(
        serving_of(modelserving("fraud", "demo", ingress={"enabled": False, "host": "off.corp"}))
    )
    found = table.lookup("ML.corp:443")
    assert found is not None and not isinstance(found, Shared) and found.ref == MNIST
    assert table.lookup("off.corp") is None


def test_a_name_two_servings_claim_names_neither_and_says_which():
    table = HostTable()
    table.put(serving_of(modelserving("mnist", "demo")))
    table.put(serving_of(modelserving("mnist", "prod")))
    shared = table.lookup("mnist")
    assert isinstance(shared, Shared)
    assert shared.servings == (MNIST, ServingRef("prod", "mnist"))
    assert "demo/mnist" in shared.message() and "prod/mnist" in shared.message()
    found = table.lookup("mnist.prod.svc")
    assert found is not None and not isinstance(found, Shared)
    # One of them gone: the name is the other's alone again.
    table.remove(MNIST)
    found = table.lookup("mnist")
    assert found is not None and not isinstance(found, Shared)
    assert found.ref == ServingRef("prod", "mnist")


def test_a_changed_serving_loses_the_names_it_no_longer_has():
    table = HostTable()
    table.put(
        serving_of(modelserving("mnist", "demo", ingress={"enabled": True, "host": "a.corp"}))
    )
    table.put(
        serving_of(modelserving("mnist", "demo", ingress={"enabled": True, "host": "b.corp"}))
    )
    assert table.lookup("a.corp") is None
    assert table.lookup("b.corp") is not None
    assert len(table) == 1


def test_a_new_list_replaces_what_was_known():
    table = HostTable()
    table.put(serving_of(modelserving("mnist", "demo")))
    table.replace_all([serving_of(modelserving("fraud", "demo"))])
    assert table.lookup("mnist.demo") is None
    assert table.lookup("fraud.demo") is not None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Mnist.Demo:8080", "mnist.demo"),
        ("mnist.demo.", "mnist.demo"),
        ("[fd00::1]:8080", "fd00::1"),
        ("[fd00::1]", "fd00::1"),
        ("fd00::1", "fd00::1"),
        ("mnist:notaport", "mnist:notaport"),
    ],
)
def test_a_host_header_is_read_without_its_port_and_case(header, name):
    assert normal_host(header) == name
