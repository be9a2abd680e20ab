"""What a new serving costs the API server, reconcile by reconcile: its children and its status,
the modelId going with the status (no write of the serving itself), and no status written
again that the last write already said, though the watch cache still shows the serving as it
was before that write. (The count on a real cluster, with the operator's own metrics:
tests/integration/test_operator_metrics.py.)"""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from modelserving import api
from modelserving_operator.kube import KubeClient
from modelserving_operator.modelids import COUNTER_ANNOTATION, CRD_NAME, ModelIds
from modelserving_operator.reconcile import Reconciler, reconcile
from modelserving_operator.runtime.cached import CachedObject
from tests.support.operator_objects import SETTINGS, ApiServer, mnist_body

pytestmark = pytest.mark.usefixtures("events")

OFF = {"enabled": False}  # no topic: the writes are the serving's and its children's


class ClusterApi(ApiServer):
    """The API server of test_operator_ownership with the CRD's modelId counter and the
    serving's status subresource; every write recorded, each object given a resourceVersion."""

    def __init__(self, serving: dict[str, Any]) -> None:
        crd = {"metadata": {"name": CRD_NAME, "resourceVersion": "1", "annotations": {}}}
        super().__init__({("CustomResourceDefinition", CRD_NAME): crd})
        self.serving = serving
        self.version = 10

    def _versioned(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        return body

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._versioned(await super().create(manifest))

    async def merge_patch(
        self, kind: str, name: str, namespace: str | None, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(("patch", (kind, name)))
        assert kind == "CustomResourceDefinition", "only the modelId counter is merge-patched"
        crd = self.objects[(kind, name)]
        crd["metadata"]["annotations"].update(patch["metadata"]["annotations"])
        return self._versioned(crd)

    async def write_status(
        self, kind: str, name: str, namespace: str, uid: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        assert (kind, name, uid) == (api.KIND, "mnist", self.serving["metadata"]["uid"])
        self.writes.append(("status", (kind, name)))
        self.serving["status"] = copy.deepcopy(status)
        return self._versioned(self.serving)


def cached(server: ClusterApi) -> list[CachedObject]:
    """The serving's children as the watch cache holds them once it has seen them."""
    return [
        CachedObject.of(copy.deepcopy(body), kind)
        for (kind, _), body in server.objects.items()
        if kind != "CustomResourceDefinition"
    ]


def reconciler(server: ClusterApi) -> Reconciler:
    kube = cast(KubeClient, server)
    return Reconciler(
        kube=kube,
        settings=SETTINGS,
        topics=cast(Any, None),
        model_ids=ModelIds(kube, "modelserving-system"),
    )


def just_made() -> tuple[dict[str, Any], ClusterApi, Reconciler]:
    """A serving just made (no status, no children; its version 5), the API server holding it,
    and an operator that has not reconciled it yet."""
    body = mnist_body(logging=OFF)
    body["metadata"]["resourceVersion"] = "5"
    server = ClusterApi(copy.deepcopy(body))
    return body, server, reconciler(server)


async def test_a_new_serving_costs_its_children_and_its_status_with_the_model_id_in_it():
    # Given a serving just made: no status, no children
    body, server, rec = just_made()

    # When its own event is reconciled
    await reconcile(rec, body, [], from_serving_event=True)

    # Then its children are created and its status written once, holding its modelId; the
    # serving itself is not written, and the cluster's counter once for the id
    children = [key for verb, key in server.writes if verb == "create"]
    assert len(children) == len(server.objects) - 1 == 7, children
    assert [key for verb, key in server.writes if verb == "status"] == [(api.KIND, "mnist")]
    assert server.serving["status"]["modelId"] == 1
    assert [key for verb, key in server.writes if verb == "patch"] == [
        ("CustomResourceDefinition", CRD_NAME)
    ]
    crd = server.objects[("CustomResourceDefinition", CRD_NAME)]
    assert crd["metadata"]["annotations"][COUNTER_ANNOTATION] == "2"
    assert rec.writes == 8  # its children and its status (the counter is the cluster's)
    assert len(server.writes) == 9


async def test_a_reconcile_before_the_cache_shows_the_status_write_writes_nothing_again():
    # Given a serving reconciled once: its children made and its status written
    body, server, rec = just_made()
    await reconcile(rec, body, [], from_serving_event=True)
    written = len(server.writes)

    # When a child's event is reconciled while the watch cache still holds the serving as it
    # was before its status write (the write's own event has not come yet)
    await reconcile(rec, body, cached(server), from_serving_event=False)

    # Then nothing is written: the status already says it (the same id, the same conditions)
    assert server.writes[written:] == []

    # And once the cache has the write's event, the status is the cache's again: a change of
    # what it says is written (here, the status taken back by hand to what it was)
    seen = copy.deepcopy(server.serving)
    assert seen["metadata"]["resourceVersion"] != "5"
    await reconcile(rec, seen, cached(server), from_serving_event=True)
    assert server.writes[written:] == []
    seen["status"]["conditions"] = []
    await reconcile(rec, seen, cached(server), from_serving_event=True)
    assert server.writes[written:] == [("status", (api.KIND, "mnist"))]
    assert server.serving["status"]["modelId"] == 1


async def test_the_event_of_an_earlier_status_write_seen_after_a_later_one_writes_nothing_again():
    # Given a serving whose status was written twice while the watch cache still held it as it
    # was made: taken up, then Ready when its Deployment became available
    body, server, rec = just_made()
    await reconcile(rec, body, [], from_serving_event=True)
    taken_up = copy.deepcopy(server.serving)  # the version the first write made
    deployment = server.objects[("Deployment", "mnist")]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "updatedReplicas": 1,
    }
    await reconcile(rec, body, cached(server), from_serving_event=False)
    assert server.serving["status"]["conditions"] != taken_up["status"]["conditions"]
    written = len(server.writes)
    ready = copy.deepcopy(server.serving)

    # When the cache then shows the first write's version (older than the second write), and a
    # reconcile runs on it
    await reconcile(rec, taken_up, cached(server), from_serving_event=True)

    # Then nothing is written: the API server holds what the second write said
    assert server.writes[written:] == []

    # And once the cache shows the second write's version, its status counts as it is
    await reconcile(rec, ready, cached(server), from_serving_event=True)
    assert server.writes[written:] == []
    assert ("demo", "mnist") not in rec.memory.status_unseen  # nothing of it kept


async def test_a_child_the_cache_has_not_seen_yet_is_not_written_again():
    # Given a serving reconciled once: its children made, its status written
    body, server, rec = just_made()
    await reconcile(rec, body, [], from_serving_event=True)
    written, counted = len(server.writes), rec.writes

    # When another reconcile runs while the watch cache has not shown its Service yet
    behind = [child for child in cached(server) if child.kind != "Service"]
    await reconcile(rec, copy.deepcopy(server.serving), behind, from_serving_event=False)

    # Then its create is refused (it is there, as the operator made it) and nothing is written
    # instead: no apply over it, no status
    assert server.writes[written:] == []
    assert rec.writes == counted
