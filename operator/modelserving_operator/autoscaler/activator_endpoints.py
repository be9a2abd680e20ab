"""The activator's ready pods, read from its Service's EndpointSlices (--activator-service)
every READ_SECONDS, one list call, on the active operator only; when they change, the servings
that may go to zero are reconciled, which writes their EndpointSlices again (endpoints.py)."""

from __future__ import annotations

import asyncio
import logging

from modelserving_operator.autoscaler.endpoints import ready_endpoints
from modelserving_operator.caches import WatchCaches
from modelserving_operator.kube import KubeError
from modelserving_operator.reconcile import Reconciler
from modelserving_operator.render.network import SLICE_SERVICE_LABEL
from modelserving_operator.runtime.kopf_internals import cache_current
from modelserving_operator.runtime.workqueue import Key, WorkQueue
from modelserving_operator.spec import ServingSpec, SpecError

log = logging.getLogger(__name__)

READ_SECONDS = 2.0


async def follow_activator_forever(rec: Reconciler, caches: WatchCaches, queue: WorkQueue) -> None:
    """Read the activator's endpoints every READ_SECONDS (nothing without --activator-service);
    on a change, mark the servings that may go to zero."""
    where = rec.settings.activator()
    if where is None:
        return
    namespace, name = where
    path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
    params = {"labelSelector": f"{SLICE_SERVICE_LABEL}={name}"}
    while True:
        await cache_current()  # a paused standby reads nothing
        try:
            listed = await rec.kube.request("GET", path, params=params)
        except KubeError as exc:
            log.warning(
                "reading the activator's endpoints (%s/%s) failed: %s", namespace, name, exc
            )
        else:
            now = ready_endpoints(listed.get("items") or [])
            if now != rec.activator.endpoints:
                log.info(
                    "the activator answers at %s",
                    ", ".join(e.address for e in now) or "no address",
                )
                rec.activator.endpoints = now
                for key in _to_zero(caches):
                    queue.add(key, serving_event=False)
        await asyncio.sleep(READ_SECONDS)


def _to_zero(caches: WatchCaches) -> list[Key]:
    keys = []
    for key, cached in caches.cached_servings():
        try:
            spec = ServingSpec.from_body(cached.parsed())
        except SpecError:
            continue
        if spec.autoscaling.to_zero:
            keys.append(key)
    return keys
