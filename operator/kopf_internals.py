"""The one private name of kopf the operator relies on, where no public API does the job;
`tests/unit/test_operator_metrics.py` fails loudly when kopf changes it.

- `kopf._cogs.clients.watching`: its `continuous_watch` (one call per listing that starts or
  restarts a resource's watch, yielding every object listed and every event watched after)
  and `watch_objs` (one call per watch request), wrapped to count the watch streams' restarts
  (kopf logs them at debug level only and has no hook for them) and to drop each object's
  `metadata.managedFields` as it arrives. Nothing reads them, they are the largest part of
  most objects, and kopf holds every object listed at its start until all are indexed: a
  thousand servings' objects with them weigh tens of MiB more at that moment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from modelserving.operator.metrics import WatchStreams

# Where the wrapped functions count: the latest operator's (kopf's module is wrapped once per
# process, and an operator run again in the same process counts in its own metrics).
_counting_in: list[WatchStreams] = []


def wrap_watch_streams(watches: WatchStreams) -> None:
    """Count every listing and watch request of kopf's watch streams in `watches`, by resource
    plural, and drop managedFields from what they yield, from now on."""
    from kopf._cogs.clients import watching

    already = bool(_counting_in)
    _counting_in[:] = [watches]
    if already:
        return
    list_and_watch, watch_request = watching.continuous_watch, watching.watch_objs

    def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].listed(resource.plural)
        return without_managed_fields(list_and_watch(resource=resource, **kwargs))

    def watch_objs(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].watched(resource.plural)
        return watch_request(resource=resource, **kwargs)

    # kopf's own functions look these up in their module at each call.
    watching.continuous_watch = continuous_watch
    watching.watch_objs = watch_objs


async def without_managed_fields(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The raw events (and listed objects, and kopf's bookmarks) of a watch stream, each object
    without its managedFields."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, dict) and isinstance(event.get("object"), dict):
                metadata = event["object"].get("metadata")
                if isinstance(metadata, dict):
                    metadata.pop("managedFields", None)
            yield event
