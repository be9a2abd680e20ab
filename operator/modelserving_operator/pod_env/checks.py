"""The Secrets and ConfigMaps that servings' pods read at start, checked by name every
--secret-check-seconds: one whose version moved marks the servings that read it, and their
reconcile rolls their pods if a value the pods read has changed (env_sources, reconcile).

Why not a watch: a watch of Secrets needs list and watch of every Secret in the watched
namespaces (of the whole cluster when none is named) and streams every Secret's values to the
operator; these gets by name read only the Secrets servings name, with a right (get) that gives
nothing to whoever would list them. ConfigMaps are read the same way, for one mechanism (the
operator's ConfigMap watch sees its own children alone). What it costs: a change is seen up to
the period late (the kubelet, too, brings a mounted Secret's change about a minute late), and a
get per source read, once per period, however many servings read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from modelserving_operator.kube import KubeError
from modelserving_operator.pod_env.sources import SourceRead, kinds_read
from modelserving_operator.reconcile import Reconciler
from modelserving_operator.runtime.kopf_internals import cache_current
from modelserving_operator.runtime.workqueue import WorkQueue

log = logging.getLogger(__name__)

# (namespace, kind, name) -> the names of the servings of that namespace whose pods read it.
Readers = Mapping[tuple[str, str, str], Iterable[str]]


async def check_sources_forever(
    rec: Reconciler, readers: Callable[[], Readers], queue: WorkQueue
) -> None:
    """Every --secret-check-seconds, `check_sources`; a failed round is told and the next tried."""
    while True:
        await asyncio.sleep(rec.settings.secret_check_seconds)
        await cache_current()  # a paused standby reads nothing
        try:
            await check_sources(rec, readers(), queue)
        except Exception:  # the next round may fare better; the checks must not end
            log.exception("checking the Secrets and ConfigMaps that servings read failed")


async def check_sources(rec: Reconciler, readers: Readers, queue: WorkQueue) -> None:
    """Read each Secret and ConfigMap that servings read (Secrets only if the operator may), by
    name; mark the servings that read one whose version is not the one last read (a reconcile,
    or the last round, read it)."""
    kinds = kinds_read(rec.settings.read_secrets)
    readers = {  # as of now
        source: tuple(servings) for source, servings in readers.items() if source[1] in kinds
    }
    sources = sorted(readers)
    known_before = set(rec.sources.versions)
    found = await asyncio.gather(
        *(rec.kube.get(kind, name, namespace) for namespace, kind, name in sources),
        return_exceptions=True,
    )
    for (namespace, kind, name), body in zip(sources, found, strict=True):
        if isinstance(body, KubeError):
            log.warning("reading %s %s/%s failed: %s", kind, namespace, name, body)
            continue
        if isinstance(body, BaseException):
            raise body
        version = SourceRead.of(kind, body).version if body else None
        known = rec.sources.versions.get((namespace, kind, name), version)
        rec.sources.versions[(namespace, kind, name)] = version
        if known != version:
            servings = sorted(set(readers[(namespace, kind, name)]))
            log.info(
                "%s %s/%s changed: reconciling the servings that read it (%s)",
                kind,
                namespace,
                name,
                ", ".join(servings),
            )
            for serving in servings:
                queue.add((namespace, serving), serving_event=False)
    # Forgotten: what no serving reads now. Not a version a reconcile read during this round's
    # gets, for a serving newer than `readers`: the next round compares with it.
    for gone in (known_before & rec.sources.versions.keys()) - set(sources):
        del rec.sources.versions[gone]
