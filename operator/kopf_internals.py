"""The one private name of kopf the operator relies on, where no public API does the job;
`tests/unit/test_operator_metrics.py` fails loudly when kopf changes it.

- `kopf._cogs.clients.watching`: its `continuous_watch` (one call per listing that starts or
  restarts a resource's watch) and `watch_objs` (one call per watch request), wrapped to count
  the watch streams' restarts. kopf logs them at debug level only and has no hook for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modelserving.operator.metrics import WatchStreams

_COUNTED = "_modelserving_counted"


def count_watch_streams(watches: WatchStreams) -> None:
    """Count every listing and watch request of kopf's watch streams in `watches`, by resource
    plural. Once per process: a second call changes nothing."""
    from kopf._cogs.clients import watching

    if getattr(watching, _COUNTED, False):
        return
    list_and_watch, watch_request = watching.continuous_watch, watching.watch_objs

    def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        watches.listed(resource.plural)
        return list_and_watch(resource=resource, **kwargs)

    def watch_objs(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        watches.watched(resource.plural)
        return watch_request(resource=resource, **kwargs)

    # kopf's own functions look these up in their module at each call.
    watching.continuous_watch = continuous_watch
    watching.watch_objs = watch_objs
    setattr(watching, _COUNTED, True)
