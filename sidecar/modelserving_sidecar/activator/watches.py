"""Keeping a collection's state from the API server: list it whole, then watch from the list's
resourceVersion; list again when the watch's start is too old (410), and after any other
failure (a second later, then longer, up to half a minute), since events may have been missed.
A list replaces what was known, so that an object deleted while nobody watched is gone too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelserving_sidecar.activator.cluster import ApiError, Cluster, Gone

log = logging.getLogger(__name__)

RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Collection:
    """What to keep: a collection's path and query, and where its objects go."""

    what: str  # for the log: "ModelServings", "serving pods"
    path: str
    params: dict[str, str]
    replace_all: Callable[[Iterable[dict[str, Any]]], None]
    update: Callable[[dict[str, Any], bool], None]  # (object, deleted)


async def keep(cluster: Cluster, collection: Collection, listed: asyncio.Event) -> None:
    """Keep the collection's state until cancelled; `listed` is set once the first list is in."""
    retry = RETRY_FIRST_SECONDS
    while True:
        try:
            items, version = await cluster.list(collection.path, collection.params)
            collection.replace_all(items)
            listed.set()
            log.info("%s listed: %d", collection.what, len(items))
            while True:
                async for kind, obj in cluster.watch(collection.path, collection.params, version):
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        collection.update(obj, kind == "DELETED")
                    retry = RETRY_FIRST_SECONDS
        except Gone:
            log.info("%s: the watch's start is too old; listing again", collection.what)
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning(
                "%s: the list or watch failed (%s); again in %.0f s", collection.what, exc, retry
            )
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_MAX_SECONDS)
