"""The operator's own watch streams of the servings' children and pods: a list, then a watch
from its resourceVersion, renewed each --watch-timeout, for each kind (and each watched
namespace), filtered on the server by label; each keeps an index (the serving's key -> what
the operator keeps of each of its objects) and tells of every change, which marks the serving.

Why not kopf's: the operator only counts these events (an index entry, a serving marked), and
kopf's per-event machinery (causes, handler kwargs, a task per object, its Body wrappers) cost
four times our reconciles' CPU at a thousand servings. The ModelServings stay on kopf.

As client-go's informers do: a 410 Gone (the API server no longer knows the stream's place: a
restart, a long outage) lists anew, and what the new listing no longer returns is told
deleted; a dropped connection resumes the watch from the last resourceVersion seen (a
bookmark's too). From a stream's start, and while it lists anew, it is unlisted in the
`WatchedObjects` that kopf's streams of the servings report to: the reconciles wait
(`kopf_internals.cache_current`) until every stream has listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from modelserving.kube_access import ApiServer
from modelserving_operator.kube import KubeClient, KubeError, request_failure
from modelserving_operator.metrics import WatchStreams
from modelserving_operator.runtime.kopf_internals import RetryForever, StreamKey, WatchedObjects
from modelserving_operator.runtime.workqueue import Key

log = logging.getLogger(__name__)

PAGE = 100  # objects per page of a listing (a thousand Deployments in one answer is a spike)
# A watch that ends this soon, with no event and no error, is renewed after this long, not at
# once: a server that closes watches at once is not asked again in a tight loop.
SHORTEST_WATCH_SECONDS = 1.0

# What a stream tells of a change: ADDED and MODIFIED with the object's body, DELETED with
# its last body (None when a listing found it gone), each with the key of its serving.
Change = Literal["ADDED", "MODIFIED", "DELETED"]
Told = Callable[["Watched", Change, Mapping[str, Any] | None, Key], None]


class Gone(Exception):
    """410: the API server no longer knows the stream's resourceVersion: list anew."""


@dataclass(frozen=True)
class Watched:
    """A kind the operator watches itself, what it keeps of each object, and the object's key."""

    group: str
    version: str
    plural: str
    kind: str
    selector: str  # the label selector the API server filters with
    namespaced: bool
    keep: Callable[[Mapping[str, Any]], Any]
    key_of: Callable[[Mapping[str, Any]], Key | None]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None) -> str:
        prefix = f"/apis/{self.api_version}" if self.group else f"/api/{self.version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{prefix}{where}/{self.plural}"


class ObjectIndex:
    """A serving's key -> what is kept of each of its objects of one kind, read as kopf's
    indexes are (`get(key, default)` gives the values, `key in index`)."""

    def __init__(self) -> None:
        self._by_key: dict[Key, dict[str, Any]] = {}  # key -> uid -> what is kept

    def get(self, key: Key, default: Iterable[Any] = ()) -> Iterable[Any]:
        kept = self._by_key.get(key)
        return list(kept.values()) if kept else default

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)

    def put(self, key: Key, uid: str, value: Any) -> None:
        self._by_key.setdefault(key, {})[uid] = value

    def discard(self, key: Key, uid: str) -> None:
        kept = self._by_key.get(key)
        if kept is not None:
            kept.pop(uid, None)
            if not kept:
                del self._by_key[key]


@dataclass
class _Stream:
    watched: Watched
    namespace: str | None
    index: ObjectIndex
    # uid -> (the key it is indexed under, or None; its resourceVersion): what the stream
    # has told, to find what a listing no longer returns and what it returns unchanged.
    known: dict[str, tuple[Key | None, str | None]] = field(default_factory=dict)
    resource_version: str | None = None

    @property
    def key(self) -> StreamKey:
        w = self.watched
        return (w.group, w.version, w.plural, self.namespace)

    @property
    def where(self) -> str:
        return self.watched.plural + (f" in {self.namespace}" if self.namespace else "")


class ChildWatches:
    """Every stream of the watched kinds, their indexes, and the tasks that run them."""

    def __init__(
        self,
        kube: KubeClient,
        server: ApiServer,
        kinds: Iterable[Watched],
        namespaces: Iterable[str],
        *,
        told: Told,
        listing: WatchedObjects,
        counts: WatchStreams,
        watch_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.kinds = list(kinds)
        self.indexes = {w.plural: ObjectIndex() for w in self.kinds}
        within: list[str | None] = [*sorted(namespaces)] or [None]
        self._streams = [
            _Stream(w, ns, self.indexes[w.plural])
            for w in self.kinds
            for ns in (within if w.namespaced else [None])
        ]
        self._kube, self._server, self._told = kube, server, told
        self._listing, self._counts = listing, counts
        self._watch_timeout, self._connect_timeout = watch_timeout, connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Run every stream; each is unlisted from now until its first listing is over."""
        if self._tasks:
            return
        for stream in self._streams:
            self._listing.restarting(stream.key)
        # A connection per watch, held for its length, in a session of their own: the
        # requests' connections (--api-concurrency) are never taken by watches.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._tasks = [asyncio.create_task(self._run(s)) for s in self._streams]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in self._streams:
            self._listing.stopped(stream.key)
        self._tasks = []
        if self._session is not None:
            await self._session.close()

    async def _run(self, stream: _Stream) -> None:
        delays: Iterator[float] = iter(RetryForever())
        listed = False
        while True:
            try:
                if not listed:
                    await self._list(stream)
                    listed = True
                started = time.monotonic()
                if not await self._watch(stream) and (
                    time.monotonic() - started < SHORTEST_WATCH_SECONDS
                ):
                    await asyncio.sleep(SHORTEST_WATCH_SECONDS)
                delays = iter(RetryForever())  # a watch answered: the next failure starts over
            except Gone:
                log.info("%s: the API server no longer knows its place; listing anew", stream.where)
                listed = False
                self._listing.restarting(stream.key)
            except (KubeError, ValueError, KeyError, TypeError) as exc:
                log.warning("watching %s failed (tried again): %s", stream.where, exc)
                await asyncio.sleep(next(delays))

    async def _list(self, stream: _Stream) -> None:
        """List the stream's objects, page by page, and tell what changed since it last told:
        objects new or changed, and those the listing no longer returns (deleted)."""
        self._counts.listed(stream.watched.plural)
        params = {"labelSelector": stream.watched.selector, "limit": str(PAGE)}
        seen: set[str] = set()
        while True:
            try:
                page = await self._kube.request(
                    "GET", stream.watched.path(stream.namespace), params=params
                )
            except KubeError as exc:
                if exc.status == 410 and "continue" in params:  # the listing's snapshot expired
                    params.pop("continue")
                    seen.clear()
                    continue
                raise
            for body in page.get("items") or []:
                body.setdefault("apiVersion", stream.watched.api_version)
                body.setdefault("kind", stream.watched.kind)
                seen.add(self._saw(stream, body))
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params["continue"] = metadata["continue"]
        gone = [uid for uid in stream.known if uid not in seen]
        if gone and stream.resource_version is not None:  # not at the first listing
            log.info("%s: %d gone while the watch was away, told deleted", stream.where, len(gone))
        for uid in gone:
            self._deleted(stream, uid, None)
        stream.resource_version = metadata.get("resourceVersion")
        self._listing.listed(stream.key)

    async def _watch(self, stream: _Stream) -> bool:
        """One watch request from the stream's resourceVersion, until the server ends it;
        whether it told anything. Raises Gone on 410."""
        self._counts.watched(stream.watched.plural)
        params = {
            "watch": "true",
            "labelSelector": stream.watched.selector,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(self._watch_timeout)),
        }
        if stream.resource_version:
            params["resourceVersion"] = stream.resource_version
        told = False
        async for event in self._events(stream.watched.path(stream.namespace), params):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Gone()
                raise KubeError(int(body.get("code") or 0), str(body.get("message")))
            stream.resource_version = (body.get("metadata") or {}).get(
                "resourceVersion", stream.resource_version
            )
            if kind == "DELETED":
                self._deleted(stream, body["metadata"]["uid"], body)
            elif kind in ("ADDED", "MODIFIED"):
                self._saw(stream, body)
            told = True
        return told

    async def _events(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        """The events of one watch request, one JSON object a line, as they come."""
        assert self._session is not None
        headers = {**await self._server.headers(), "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=self._watch_timeout + 30
        )
        try:
            async with self._session.get(
                self._server.url + path,
                params=params,
                headers=headers,
                ssl=self._server.ssl_context,
                timeout=timeout,
            ) as response:
                if response.status == 410:
                    raise Gone()
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:500])
                rest = b""
                # Lines by hand: aiohttp's readline refuses a line past 128 KiB, and a
                # ConfigMap may hold up to 1 MiB.
                async for chunk in response.content.iter_any():
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"watch {path}: {request_failure(exc)}") from None

    def _saw(self, stream: _Stream, body: dict[str, Any]) -> str:
        """Index an object listed, added or modified, and tell it if it changed; its uid."""
        metadata = body["metadata"]
        metadata.pop("managedFields", None)  # nothing reads them; the largest part of most
        uid: str = metadata["uid"]
        version: str | None = metadata.get("resourceVersion")
        key = stream.watched.key_of(body)
        before = stream.known.get(uid)
        if before is not None and before[1] == version:
            return uid  # listed anew, unchanged
        if before is not None and before[0] is not None and before[0] != key:
            stream.index.discard(before[0], uid)  # its labels name another serving now
            self._told(stream.watched, "DELETED", body, before[0])
        stream.known[uid] = (key, version)
        if key is not None:
            stream.index.put(key, uid, stream.watched.keep(body))
            self._told(stream.watched, "ADDED" if before is None else "MODIFIED", body, key)
        return uid

    def _deleted(self, stream: _Stream, uid: str, body: Mapping[str, Any] | None) -> None:
        before = stream.known.pop(uid, None)
        key = before[0] if before is not None else None
        if key is None and body is not None:
            key = stream.watched.key_of(body)
        if key is not None:
            stream.index.discard(key, uid)
            self._told(stream.watched, "DELETED", body, key)
