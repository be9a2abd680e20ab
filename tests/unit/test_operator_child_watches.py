"""The operator's own watch streams of the children and pods (runtime/watches), against a
stand-in API server: the first listing in pages fills the index and tells every object, a
watch resumes from the listing's resourceVersion and tells each change, and a 410 Gone lists
anew, telling deleted what the new listing no longer returns and nothing of what is unchanged.
The reconciles wait until every stream has listed (WatchedObjects)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelserving.kube_access import ApiServer, BearerToken
from modelserving_operator.caches import watched_kinds
from modelserving_operator.kube import KubeClient
from modelserving_operator.metrics import WatchStreams
from modelserving_operator.runtime import watches as own_watches
from modelserving_operator.runtime.cached import CachedObject
from modelserving_operator.runtime.kopf_internals import WatchedObjects
from modelserving_operator.runtime.watches import ChildWatches, Watched

NAMESPACE = "team-a"


def deployment(name: str, serving: str, version: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {"app.kubernetes.io/instance": serving},
            "managedFields": [{"manager": "someone"}],
        },
        "spec": {"replicas": 1},
    }


class StandInApi:
    """Deployments of one namespace: listed in pages of the client's limit; each watch request
    is answered with the events queued for it, until a None ends it."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 10
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.listings: list[Mapping[str, str]] = []
        self.watches: list[Mapping[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.path == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        query = request.query
        assert query["labelSelector"] == "app.kubernetes.io/managed-by=modelserving-operator"
        if query.get("watch") != "true":
            self.listings.append(dict(query))
            names = sorted(self.objects)
            start = int(query.get("continue", "0"))
            end = start + int(query["limit"])
            metadata = {"resourceVersion": str(self.version)}
            if end < len(names):
                metadata["continue"] = str(end)
            items = [self.objects[n] for n in names[start:end]]
            return web.json_response({"metadata": metadata, "items": items})
        self.watches.append(dict(query))
        response = web.StreamResponse()
        await response.prepare(request)
        while (event := await self.events.get()) is not None:
            await response.write(json.dumps(event).encode() + b"\n")
        return response


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[StandInApi, str]]:
    stand_in = StandInApi()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", stand_in.handle)
    server = TestServer(app)
    await server.start_server()
    yield stand_in, str(server.make_url("")).rstrip("/")
    for _ in range(10):
        stand_in.events.put_nowait(None)
    await server.close()


async def until(condition: Any, what: str, timeout: float = 5.0) -> None:
    """Poll `condition` until it holds, for at most `timeout` seconds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within {timeout} s")


async def test_listing_then_watching_tells_each_change_and_a_410_lists_anew(
    api: tuple[StandInApi, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in, url = api
    # Given three Deployments of two servings (listed in pages of 2)
    for name, serving in [("a", "one"), ("a-extra", "one"), ("b", "two")]:
        stand_in.objects[name] = deployment(name, serving, 5)
    server = ApiServer(url, False, BearerToken(lambda: "token", None))
    kube = KubeClient(server, 4, 5.0)
    (kind,) = [w for w in watched_kinds() if w.plural == "deployments"]
    told: list[tuple[str, tuple[str, str]]] = []

    def tell(watched: Watched, change: str, body: Mapping[str, Any] | None, key: Any) -> None:
        told.append((change, key))

    listing = WatchedObjects(())
    watches = ChildWatches(
        kube,
        server,
        [kind],
        [NAMESPACE],
        told=tell,
        listing=listing,
        counts=WatchStreams(),
        watch_timeout=60,
        connect_timeout=5,
    )
    index = watches.indexes["deployments"]
    monkeypatch.setattr(own_watches, "PAGE", 2)
    try:
        # When the streams start
        watches.start()
        # Then the reconciles wait until the first listing is over
        assert listing.unlisted() == [("apps", "v1", "deployments", NAMESPACE)]
        await asyncio.wait_for(listing.all_listed(), 5)
        assert len(stand_in.listings) == 2  # two pages
        assert sorted(told) == [("ADDED", (NAMESPACE, "one"))] * 2 + [("ADDED", (NAMESPACE, "two"))]
        kept = list(index.get((NAMESPACE, "one")))
        assert sorted(c.name for c in kept) == ["a", "a-extra"]
        assert all(isinstance(c, CachedObject) and c.kind == "Deployment" for c in kept)
        assert "managedFields" not in kept[0].body

        # And the watch resumes from the listing's resourceVersion, with bookmarks
        await until(lambda: stand_in.watches, "the watch")
        assert stand_in.watches[0]["resourceVersion"] == "10"
        assert stand_in.watches[0]["allowWatchBookmarks"] == "true"

        # When a Deployment is scaled by hand, and another deleted
        told.clear()
        scaled = deployment("b", "two", 11)
        scaled["spec"]["replicas"] = 3
        stand_in.events.put_nowait({"type": "MODIFIED", "object": scaled})
        stand_in.events.put_nowait({"type": "DELETED", "object": deployment("a-extra", "one", 12)})
        stand_in.events.put_nowait(
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}}
        )
        # Then each change is told, with its serving, and the index follows
        await until(lambda: len(told) == 2, "the two changes told")
        assert told == [("MODIFIED", (NAMESPACE, "two")), ("DELETED", (NAMESPACE, "one"))]
        (b,) = index.get((NAMESPACE, "two"))
        assert b.resource_version == "11" and json.loads(b.body)["spec"]["replicas"] == 3
        assert [c.name for c in index.get((NAMESPACE, "one"))] == ["a"]

        # When the API server no longer knows the stream's place (410), while one Deployment
        # was deleted unseen and one changed
        told.clear()
        del stand_in.objects["a"]
        del stand_in.objects["a-extra"]
        stand_in.objects["b"] = deployment("b", "two", 11)  # as last told
        stand_in.objects["c"] = deployment("c", "three", 14)
        stand_in.version = 20
        stand_in.events.put_nowait({"type": "ERROR", "object": {"code": 410, "message": "old"}})
        # Then it lists anew: the Deployment gone is told deleted, the new one added, the one
        # unchanged is not told
        await until(lambda: len(told) == 2, "the relisting's changes told")
        assert sorted(told) == [("ADDED", (NAMESPACE, "three")), ("DELETED", (NAMESPACE, "one"))]
        assert (NAMESPACE, "one") not in index
        await until(lambda: len(stand_in.watches) == 2, "the watch again")
        assert stand_in.watches[1]["resourceVersion"] == "20"
        assert listing.unlisted() == []
    finally:
        await watches.close()
        await kube.close()
