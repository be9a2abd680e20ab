"""Which pods of a serving can take a request (Ready, addressed, not being deleted), taken in
turn; a serving's first usable pod lets its held requests go."""

from __future__ import annotations

import pytest

from modelserving import api
from modelserving_sidecar.activator.hosts import ServingRef
from modelserving_sidecar.activator.pods import SERVING_PODS, ReadyPods, usable_address

MNIST = ServingRef("demo", "mnist")
FRAUD = ServingRef("demo", "fraud")


def pod(
    name: str,
    serving: str = "mnist",
    ip: str | None = "127.0.9.1",
    ready: str = "True",
    deleting: bool = False,
) -> dict:
    meta: dict = {
        "name": name,
        "namespace": "demo",
        "labels": {api.LABEL_NAME: api.SERVING_APP_NAME, api.LABEL_INSTANCE: serving},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict = {"conditions": [{"type": "Ready", "status": ready}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(
    ("the_pod", "usable"),
    [
        (pod("a"), "127.0.9.1"),
        (pod("a", ready="False"), None),
        (pod("a", ip=None), None),
        (pod("a", deleting=True), None),
        ({"metadata": {"name": "a"}, "status": {"podIP": "127.0.9.1"}}, None),
    ],
)
def test_a_pod_is_usable_when_ready_addressed_and_not_being_deleted(the_pod, usable):
    assert usable_address(the_pod) == usable


def test_a_servings_usable_pods_are_taken_in_turn_and_its_first_one_releases_it():
    usable: list[ServingRef] = []
    pods = ReadyPods(usable.append)
    pods.update(pod("a", ready="False"))
    assert pods.pick(MNIST) is None and usable == []
    pods.update(pod("a", ip="127.0.9.1"))
    assert usable == [MNIST]
    pods.update(pod("b", ip="127.0.9.2"))
    assert usable == [MNIST]  # told once, when the first came
    assert [pods.pick(MNIST) for _ in range(4)] == ["127.0.9.1", "127.0.9.2"] * 2
    pods.update(pod("a", ip="127.0.9.1", deleting=True))
    assert [pods.pick(MNIST) for _ in range(2)] == ["127.0.9.2"] * 2
    pods.update(pod("b", ip="127.0.9.2"), deleted=True)
    assert pods.pick(MNIST) is None and pods.count(MNIST) == 0
    pods.update(pod("c", serving="fraud", ip="127.0.9.3"))
    assert usable == [MNIST, FRAUD]


def test_a_new_list_replaces_the_pods_and_releases_servings_that_gained_one():
    usable: list[ServingRef] = []
    pods = ReadyPods(usable.append)
    pods.update(pod("a"))
    pods.replace_all([pod("a"), pod("c", serving="fraud", ip="127.0.9.3")])
    assert usable == [MNIST, FRAUD]  # mnist had one already before: told once
    pods.replace_all([])
    assert pods.pick(MNIST) is None and pods.pick(FRAUD) is None


def test_the_pods_watched_are_those_the_operator_labels_as_a_servings():
    from modelserving_operator.names import labels
    from modelserving_operator.spec import ServingSpec

    spec = ServingSpec.from_body(
        {
            "metadata": {"name": "mnist", "namespace": "demo"},
            "spec": {"model": {"version": 1, "basePath": "s3://m/mnist"}},
        }
    )
    rendered = labels(spec)
    wanted = dict(term.split("=") for term in SERVING_PODS.split(","))
    assert wanted.items() <= rendered.items()
