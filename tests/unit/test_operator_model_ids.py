"""A serving's modelId is one the operator issued to it: a copied or hand-written annotation
gets a fresh id, and what the operator issued stays, with one write per new serving."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from modelserving import api
from modelserving.operator.kube import KubeError
from modelserving.operator.modelids import (
    COUNTER_CONFIGMAP,
    COUNTER_KEY,
    ModelIds,
    annotated,
    assign_model_id,
    issued_model_id,
)
from modelserving.operator.names import MODEL_ID_ANNOTATION

NAMESPACE = "modelserving-system"


class FakeApi:
    """The counter ConfigMap and the servings, with the resourceVersion checks the API server
    makes; counts the writes."""

    def __init__(self, next_id: int = 1) -> None:
        self.counter: dict[str, Any] = {
            "metadata": {"name": COUNTER_CONFIGMAP, "resourceVersion": "1"},
            "data": {COUNTER_KEY: str(next_id)},
        }
        self.servings: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    def add(self, serving: dict[str, Any]) -> dict[str, Any]:
        serving["metadata"].setdefault("resourceVersion", "1")
        self.servings[serving["metadata"]["name"]] = serving
        return copy.deepcopy(serving)

    async def get(self, kind: str, name: str, namespace: str | None = None) -> Any:
        found = self.counter if kind == "ConfigMap" else self.servings.get(name)
        return copy.deepcopy(found)

    async def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        assert method == "PUT" and COUNTER_CONFIGMAP in path
        if body["metadata"]["resourceVersion"] != self.counter["metadata"]["resourceVersion"]:
            raise KubeError(409, "the counter changed")
        self.counter = body
        self.counter["metadata"]["resourceVersion"] += "+"
        self.writes.append("counter")
        return body

    async def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert kind == api.KIND
        serving = self.servings[name]
        if patch["metadata"]["resourceVersion"] != serving["metadata"]["resourceVersion"]:
            raise KubeError(409, "the serving changed")
        annotations = serving["metadata"].setdefault("annotations", {})
        annotations.update(patch["metadata"]["annotations"])
        serving["metadata"]["resourceVersion"] += "+"
        self.writes.append(f"annotate {name}")
        return copy.deepcopy(serving)


def serving(name: str, uid: str, annotation: str | None = None, status_id: int | None = None):
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": "team-a", "uid": uid}}
    if annotation is not None:
        body["metadata"]["annotations"] = {MODEL_ID_ANNOTATION: annotation}
    if status_id is not None:
        body["status"] = {"modelId": status_id}
    return body


def assign(fake: FakeApi, ids: ModelIds, body: dict[str, Any]) -> int:
    return asyncio.run(assign_model_id(fake, ids, body))  # type: ignore[arg-type]


def model_ids(fake: FakeApi) -> ModelIds:
    return ModelIds(fake, NAMESPACE)  # type: ignore[arg-type]


def annotation_of(fake: FakeApi, name: str) -> str:
    return fake.servings[name]["metadata"]["annotations"][MODEL_ID_ANNOTATION]


def test_a_new_serving_gets_a_fresh_id_with_one_write_of_its_own():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)

    new = assign(fake, ids, fake.add(serving("a", "uid-a")))

    assert new == 7 and annotation_of(fake, "a") == "7"
    assert fake.writes == ["counter", "annotate a"]


def test_a_manifest_copied_with_its_annotation_gets_a_fresh_id():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)
    original = assign(fake, ids, fake.add(serving("a", "uid-a")))

    # `kubectl get a -o yaml`, renamed and applied: the annotation comes along, the status
    # (a subresource) and the uid do not
    copied = assign(fake, ids, fake.add(serving("b", "uid-b", annotation=str(original))))

    assert copied != original and annotation_of(fake, "b") == str(copied)
    assert fake.writes.count("annotate b") == 1


def test_a_hand_written_annotation_naming_another_servings_id_gets_a_fresh_id():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    # serving a, made long ago: its status holds the id the operator issued
    fake.add(serving("a", "uid-a", annotation="3", status_id=3))

    chosen = assign(fake, ids, fake.add(serving("b", "uid-b", annotation="3")))

    assert chosen == 20 and annotation_of(fake, "b") == "20"


def test_an_edited_annotation_is_written_back_to_the_id_the_status_holds():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    body = fake.add(serving("b", "uid-b", annotation="3", status_id=12))

    assert ids.recorded(body) == 12 and not annotated(body, 12)
    assert assign(fake, ids, body) == 12
    assert annotation_of(fake, "b") == "12" and fake.writes == ["annotate b"]  # no id taken


def test_servings_made_before_keep_their_ids_with_no_write():
    fake = FakeApi(next_id=20)
    ids = model_ids(fake)
    body = fake.add(serving("a", "uid-a", annotation="5", status_id=5))

    assert ids.recorded(body) == 5 and annotated(body, 5)
    assert assign(fake, ids, body) == 5
    assert fake.writes == []


def test_the_id_just_issued_holds_while_the_cache_shows_the_annotation_before_the_status():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)
    assign(fake, ids, fake.add(serving("a", "uid-a")))
    annotated_only = copy.deepcopy(fake.servings["a"])  # the watch's event of our own write

    assert ids.recorded(annotated_only) == 7
    assert assign(fake, ids, annotated_only) == 7
    assert fake.writes == ["counter", "annotate a"]

    # once the status holds it, the status is the record
    ids.recorded({**annotated_only, "status": {"modelId": 7}})
    assert issued_model_id(annotated_only, {}) is None
    assert ids.recorded(annotated_only) is None  # the process's own record is let go


def test_a_conflict_does_not_cost_an_id():
    fake = FakeApi(next_id=7)
    ids = model_ids(fake)
    stale = fake.add(serving("a", "uid-a"))
    fake.servings["a"]["metadata"]["resourceVersion"] = "2"  # the user edited it meanwhile

    assert assign(fake, ids, stale) == 7
    assert fake.writes == ["counter", "annotate a"]


def test_an_operator_restarted_before_the_status_was_written_issues_another_id():
    fake = FakeApi(next_id=7)
    assign(fake, model_ids(fake), fake.add(serving("a", "uid-a")))

    again = assign(fake, model_ids(fake), copy.deepcopy(fake.servings["a"]))

    # The one case where a serving's id changes: the id 7 is a gap, and never anyone else's.
    assert again == 8 and annotation_of(fake, "a") == "8"


def test_a_status_id_that_is_not_a_number_is_not_an_id():
    assert issued_model_id(serving("a", "uid-a", status_id=None), {}) is None
    assert issued_model_id({**serving("a", "uid-a"), "status": {"modelId": True}}, {}) is None
    assert issued_model_id(serving("a", "uid-a", annotation="9"), {"uid-a": 4}) == 4
