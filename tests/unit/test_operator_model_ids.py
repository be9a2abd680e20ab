"""A serving's modelId is one the operator issued to it: a copied or hand-written annotation
names nothing, and what the operator issued stays; a new serving costs no write of its own (its
id goes with its first status), only the cluster's counter, one write per block of ids."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from modelserving import api
from modelserving_operator.kube import KubeError
from modelserving_operator.modelids import (
    COUNTER_ANNOTATION,
    CRD_NAME,
    LEGACY_COUNTER_CONFIGMAP,
    LEGACY_COUNTER_KEY,
    ModelIds,
    first_id,
    keeps_model_id,
    model_id_claim,
    status_model_id,
)

NAMESPACE = "modelserving-system"
# The annotation operators before this one wrote the id in: neither read nor written now.
OLDER_ANNOTATION = f"{api.GROUP}/model-id"


class FakeApi:
    """The CRD with its counter annotation (none: `next_id` None), an older operator's counter
    ConfigMap (`legacy_next`), and the servings, with the resourceVersion check the API server
    makes of the counter's write; counts the writes."""

    def __init__(self, next_id: int | None = 1, legacy_next: int | None = None) -> None:
        annotations = {} if next_id is None else {COUNTER_ANNOTATION: str(next_id)}
        self.crd: dict[str, Any] = {
            "metadata": {"name": CRD_NAME, "resourceVersion": "1", "annotations": annotations}
        }
        self.legacy = None
        if legacy_next is not None:
            self.legacy = {
                "metadata": {"name": LEGACY_COUNTER_CONFIGMAP},
                "data": {LEGACY_COUNTER_KEY: str(legacy_next)},
            }
        self.servings: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    @property
    def next_id(self) -> int:
        return int(self.crd["metadata"]["annotations"][COUNTER_ANNOTATION])

    def add(self, serving: dict[str, Any]) -> dict[str, Any]:
        serving["metadata"].setdefault("resourceVersion", "1")
        self.servings[serving["metadata"]["name"]] = serving
        return copy.deepcopy(serving)

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        if kind == "CustomResourceDefinition":
            assert name == CRD_NAME
            return copy.deepcopy(self.crd)
        if kind == "ConfigMap":
            assert name == LEGACY_COUNTER_CONFIGMAP and namespace == NAMESPACE
            return copy.deepcopy(self.legacy)
        return copy.deepcopy(self.servings.get(name))

    async def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        if kind == "CustomResourceDefinition":
            assert name == CRD_NAME and namespace is None
            if patch["metadata"]["resourceVersion"] != self.crd["metadata"]["resourceVersion"]:
                raise KubeError(409, "the CRD changed")
            self.crd["metadata"]["annotations"].update(patch["metadata"]["annotations"])
            self.crd["metadata"]["resourceVersion"] += "+"
            self.writes.append("counter")
            return copy.deepcopy(self.crd)
        raise AssertionError(f"a write of {kind} {name}: only the counter is written here")


def serving(name: str, uid: str, annotation: str | None = None, status_id: int | None = None):
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": "team-a", "uid": uid}}
    if annotation is not None:
        body["metadata"]["annotations"] = {OLDER_ANNOTATION: annotation}
    if status_id is not None:
        body["status"] = {"modelId": status_id}
    return body


def assign(fake: FakeApi, ids: ModelIds, body: dict[str, Any]) -> int:
    """The serving's id as a reconcile of its own event finds it: the one the operator issued
    it, else a fresh one (reconcile._model_id)."""
    recorded = ids.recorded(body)
    return recorded if recorded is not None else asyncio.run(ids.take(body["metadata"]["uid"]))


def model_ids(fake: FakeApi) -> ModelIds:
    return ModelIds(fake, NAMESPACE)  # type: ignore[arg-type]


def test_a_new_serving_gets_a_fresh_id_with_no_write_of_its_own():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)

    new = assign(fake, ids, fake.add(serving("a", "uid-a")))

    assert new == 7
    assert fake.writes == ["counter"]  # the id goes with the serving's first status


def test_a_manifest_copied_with_an_older_operators_annotation_gets_a_fresh_id():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)
    fake.add(serving("a", "uid-a", annotation="3", status_id=3))

    # `kubectl get a -o yaml`, renamed and applied: the annotation comes along, the status
    # (a subresource) and the uid do not
    copied = assign(fake, ids, fake.add(serving("b", "uid-b", annotation="3")))

    assert copied == 7
    assert fake.writes == ["counter"]


def test_a_hand_written_annotation_naming_another_servings_id_gets_a_fresh_id():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    # serving a, made long ago: its status holds the id the operator issued
    fake.add(serving("a", "uid-a", annotation="3", status_id=3))

    chosen = assign(fake, ids, fake.add(serving("b", "uid-b", annotation="3")))

    assert chosen == 20


def test_the_id_the_status_holds_is_kept_whatever_the_annotation_says():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    body = fake.add(serving("b", "uid-b", annotation="3", status_id=12))

    assert ids.recorded(body) == 12
    assert assign(fake, ids, body) == 12
    assert fake.writes == []  # no id taken, and the annotation left as it is


def test_servings_made_before_keep_their_ids_with_no_write():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    body = fake.add(serving("a", "uid-a", annotation="5", status_id=5))

    assert ids.recorded(body) == 5
    assert assign(fake, ids, body) == 5
    assert fake.writes == []


def test_the_id_just_issued_holds_until_the_status_holds_it():
    # Its status is written after its children (or its write failed, or the watch's event of
    # it has not come yet): the cache shows the serving without it meanwhile
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)
    assign(fake, ids, fake.add(serving("a", "uid-a")))
    no_status = copy.deepcopy(fake.servings["a"])

    assert ids.recorded(no_status) == 7
    assert assign(fake, ids, no_status) == 7
    assert fake.writes == ["counter"]  # not another id

    # once the status holds it, the status is the record
    ids.recorded({**no_status, "status": {"modelId": 7}})
    assert ids.recorded(no_status) is None  # the process's own record is let go


def test_an_operator_restarted_before_the_status_was_written_issues_another_id():
    fake = FakeApi(next_id=7)
    assign(fake, model_ids(fake), fake.add(serving("a", "uid-a")))

    again = assign(fake, model_ids(fake), copy.deepcopy(fake.servings["a"]))

    # The one case where a serving's id changes: the id 7 is a gap, and never anyone else's.
    assert again == 8


def test_a_status_id_that_is_not_a_number_is_not_an_id():
    assert status_model_id(serving("a", "uid-a", status_id=None)) is None
    assert status_model_id({**serving("a", "uid-a"), "status": {"modelId": True}}) is None
    assert status_model_id(serving("a", "uid-a", annotation="9")) is None
    assert model_id_claim(serving("a", "uid-a", annotation="9")) == {}


# The counter is one per cluster (the CRD's annotation), and never below an id in use


def test_a_lost_counter_starts_above_every_id_in_use():
    # The counter's annotation is gone (the CRD replaced), the servings keep their ids
    fake = FakeApi(next_id=None)
    ids = ModelIds(fake, NAMESPACE, in_use=lambda: [1, 9, 4])  # type: ignore[arg-type]

    assert assign(fake, ids, fake.add(serving("new", "uid-new"))) == 10
    assert fake.next_id == 11


def test_a_counter_restored_from_before_its_ids_is_raised_past_them():
    fake = FakeApi(next_id=3)
    ids = ModelIds(fake, NAMESPACE, in_use=lambda: [1, 2, 3, 4, 5])  # type: ignore[arg-type]

    assert assign(fake, ids, fake.add(serving("new", "uid-new"))) == 6


def test_the_counter_an_older_operator_kept_in_its_namespace_is_carried_over():
    # Ids up to 40 were issued, some to servings since deleted whose records stay in Kafka
    fake = FakeApi(next_id=None, legacy_next=41)
    ids = ModelIds(fake, NAMESPACE, in_use=lambda: [3])  # type: ignore[arg-type]

    assert assign(fake, ids, fake.add(serving("new", "uid-new"))) == 41
    assert fake.next_id == 42  # the CRD's from now on: the ConfigMap is never written


def test_first_id():
    assert first_id(None, []) == 1
    assert first_id(5, []) == 5
    assert first_id(5, [2, 7]) == 8
    assert first_id(None, [2]) == 3


# Two servings whose status holds one id: the one made first keeps it


def claims(*bodies: dict[str, Any]) -> dict[int, list[dict[str, str]]]:
    index: dict[int, list[dict[str, str]]] = {}
    for body in bodies:
        for model_id, claim in model_id_claim(body).items():
            index.setdefault(model_id, []).append(claim)
    return index


def made(body: dict[str, Any], when: str) -> dict[str, Any]:
    body["metadata"]["creationTimestamp"] = when
    return body


def test_of_two_servings_holding_one_id_the_one_made_first_keeps_it():
    original = made(serving("a", "uid-a", annotation="3", status_id=3), "2026-01-01T00:00:00Z")
    # restored from a backup with its status, in another namespace: made anew, today
    restored = made(serving("b", "uid-b", annotation="3", status_id=3), "2026-12-07T10:00:00Z")
    restored["metadata"]["namespace"] = "team-b"
    index = claims(original, restored)
    fake = FakeApi(next_id=20)
    remarked: list[tuple[str, str]] = []
    ids = ModelIds(
        fake,  # type: ignore[arg-type]
        NAMESPACE,
        holders=lambda model_id: index.get(model_id, []),
        in_use=index.keys,
        remark=remarked.append,
    )

    # a's reconcile keeps 3 and marks b, whose reconcile then takes a fresh id
    assert ids.recorded(original) == 3 and remarked == [("team-b", "b")]
    assert ids.recorded(restored) is None
    fake.add(restored)
    assert assign(fake, ids, restored) == 20

    # until b's status says 20, its id is the one just issued, not another fresh one
    assert ids.recorded(restored) == 20
    assert ids.recorded({**restored, "status": {"modelId": 20}}) == 20
    assert fake.writes == ["counter"]


def test_the_same_moment_of_creation_is_decided_by_uid():
    first = made(serving("a", "uid-1", status_id=3), "2026-12-07T10:00:00Z")
    second = made(serving("b", "uid-2", status_id=3), "2026-12-07T10:00:00Z")

    assert keeps_model_id(first, claims(second)[3])
    assert not keeps_model_id(second, claims(first)[3])
    assert keeps_model_id(second, [])
