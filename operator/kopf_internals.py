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

# Where the wrapped functions count: the latest operator's (kopf's module is wrapped once per
# process, and an operator run again in the same process counts in its own metrics).
_counting_in: list[WatchStreams] = []


def count_watch_streams(watches: WatchStreams) -> None:
    """Count every listing and watch request of kopf's watch streams in `watches`, by resource
    plural, from now on."""
    from kopf._cogs.clients import watching

    already = bool(_counting_in)
    _counting_in[:] = [watches]
    if already:
        return
    list_and_watch, watch_request = watching.continuous_watch, watching.watch_objs

    def continuous_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].listed(resource.plural)
        return list_and_watch(resource=resource, **kwargs)

    def watch_objs(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        _counting_in[0].watched(resource.plural)
        return watch_request(resource=resource, **kwargs)

    # kopf's own functions look these up in their module at each call.
    watching.continuous_watch = continuous_watch
    watching.watch_objs = watch_objs
