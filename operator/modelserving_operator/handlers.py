"""The kopf registrations: `configure` (every framework setting with its reason, and the
operator's own watch streams of the children and pods), the indexes of the servings that are
part of the operator's watch caches (caches.py), and thin handlers that mark a serving in the
controller's work queue on any event of it; the own streams mark it on any event of a child
or pod of it (`_child_told`).

The operator is level-triggered: a serving's event, or any event of a child it owns (edited or
deleted by hand, a Deployment's pods becoming ready), marks the serving, and the controller's
workers (runtime/controller.py) run the same reconcile (reconcile.py) against the watch
caches, one serving at a time each. Nothing here makes kopf write to the resources (no
finalizers, no progress annotations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry

from modelserving import api
from modelserving_operator import reconcile_trace
from modelserving_operator.autoscaler.activator_endpoints import follow_activator_forever
from modelserving_operator.autoscaler.loop import Autoscaler
from modelserving_operator.caches import (
    INDEXES,
    MODEL_IDS_INDEX,
    SERVINGS_INDEX,
    SOURCE_READERS_INDEX,
    WatchCaches,
    watched_kinds,
)
from modelserving_operator.kafka.topic_checks import check_topics_forever
from modelserving_operator.kafka.topics import TopicKeeper
from modelserving_operator.kube import KubeClient, KubeError
from modelserving_operator.metrics import OperatorMetrics, QueueState, registry_of, serve_metrics
from modelserving_operator.modelids import ModelIds, model_id_claim
from modelserving_operator.names import cluster_role_binding_name, made_for
from modelserving_operator.pod_env.checks import check_sources_forever
from modelserving_operator.pod_env.sources import env_sources
from modelserving_operator.reconcile import Reconciler, reconcile_cached
from modelserving_operator.runtime.cached import CachedObject
from modelserving_operator.runtime.controller import Controller, Outcome
from modelserving_operator.runtime.kopf_internals import (
    NoDiffBase,
    RetryForever,
    WatchedObjects,
    all_indexed,
    live_indexes,
    wrap_watch_streams,
)
from modelserving_operator.runtime.peering import peering_priority
from modelserving_operator.runtime.watches import Change, ChildWatches, Watched
from modelserving_operator.runtime.workqueue import Key
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_sidecar.tracing.spans import Tracing

log = logging.getLogger(__name__)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    # kopf's defaults can overload an API server with many resources: set them on purpose.
    # kopf's own worker limit would deadlock with indexes in kopf as it ships (workers parked
    # until every index is filled hold every slot; see kopf_internals), so its per-object
    # workers stay unlimited (coroutines are cheap) and the limit applies to concurrent
    # reconciles instead (--worker-limit, the controller's workers).
    settings.batching.worker_limit = None
    # Handlers only mark servings in the work queue; a serving's burst of events is one
    # reconcile, run by one of these workers, at most `worker_limit` at once.
    settings.networking.request_timeout = ours.api_timeout_seconds  # a hung call is retried
    # kopf gives up on a request after its retries (54 s in all), and a watch given up on
    # is never renewed: an API server away longer (a restart of a loaded one) left the
    # operator deaf until restarted. It retries for as long as the API server is away.
    settings.networking.error_backoffs = RetryForever()
    settings.networking.connect_timeout = min(10.0, ours.api_timeout_seconds)
    settings.watching.server_timeout = int(ours.watch_timeout_seconds)  # renew watches regularly
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.watching.connect_timeout = min(10.0, ours.api_timeout_seconds)
    # No change handlers, no daemons: nothing needs kopf's copy of each object's last state.
    settings.persistence.diffbase_storage = NoDiffBase()
    # Replicas of one Deployment need priorities that differ (kopf freezes all that share the
    # highest), and a dead active replica is replaced after its entry's lifetime: see peering.
    settings.peering.priority = peering_priority(time.time())
    settings.peering.lifetime = ours.peering_lifetime_seconds
    # The first listing of each kind in pages: a thousand Deployments in one answer is a spike
    # of memory that the process keeps (freed Python memory is rarely given back).
    settings.watching.chunk_size = 100
    # kopf keeps each object's task, and the last body it handled, this long after the event
    # (5 s by default): at a start over a thousand servings that was every object listed at
    # once, about 100 MiB the process kept. An event after it starts a new task: cheap.
    settings.queueing.idle_timeout = 0.5
    # Only the events we post on purpose, not every log line of a handler.
    settings.posting.level = logging.WARNING
    memo.caches = caches = WatchCaches()
    memo.reconciler = rec = _reconciler(ours, caches, lambda key: _remark(memo, key))
    memo.registry = registry = registry_of(rec.metrics)
    memo.exits = contextlib.AsyncExitStack()
    tracing = await memo.exits.enter_async_context(
        Tracing.exporting(
            ours.tracing_endpoint,
            ours.reconcile_trace_ratio,
            registry,
            {"service.name": reconcile_trace.SERVICE_NAME},
            "operator",
        )
    )

    async def reconcile_one(key: Key, serving_event: bool) -> Outcome:
        return await reconcile_cached(rec, caches, key, serving_event)

    memo.controller = Controller(
        reconcile_one
        if tracing is None
        else reconcile_trace.traced(reconcile_one, tracing, lambda: rec.writes),
        workers=ours.worker_limit,
        retry_seconds=ours.retry_seconds,
        metrics=rec.metrics,
        writes=lambda: rec.writes,
    )
    # What a stream's fresh listing no longer returns is told DELETED (kopf tells nothing of
    # it); the serving's DELETED handler reads its spec (its binding's name).
    memo.watched = watched = WatchedObjects((api.PLURAL,), with_spec=(api.PLURAL,))
    wrap_watch_streams(rec.metrics.watches, watched)
    # The children and pods: the operator's own streams, not kopf's (runtime/watches), started
    # now, beside kopf's of the servings; the workers wait for their first listings.
    memo.child_watches = ChildWatches(
        rec.kube,
        rec.kube.server,
        watched_kinds(),
        ours.namespaces,
        told=lambda kind, change, body, key: _child_told(memo, kind, change, body, key),
        listing=watched,
        counts=rec.metrics.watches,
        watch_timeout=ours.watch_timeout_seconds,
        connect_timeout=min(10.0, ours.api_timeout_seconds),
    )
    caches.own = memo.child_watches.indexes
    memo.orphan_checks = set()
    memo.child_watches.start()
    if ours.metrics_port:
        memo.metrics_server = await _serve_metrics(rec, memo.controller, caches, registry)


def _remark(memo: kopf.Memo, key: Key) -> None:
    memo.controller.mark(key, serving_event=True)


def _reconciler(
    settings: OperatorSettings, caches: WatchCaches, remark: Callable[[Key], None]
) -> Reconciler:
    kube = KubeClient.connect(settings.api_concurrency, settings.api_timeout_seconds)

    def servings_without_id() -> int:
        """Servings the watch cache holds that have no modelId yet (each will take one)."""
        return sum(model_ids.recorded(serving) is None for serving in caches.servings())

    model_ids = ModelIds(
        kube,
        settings.operator_namespace,
        servings_without_id,
        holders=caches.model_id_holders,
        in_use=caches.model_ids_in_use,
        remark=remark,
    )
    return Reconciler(
        kube=kube,
        settings=settings,
        topics=TopicKeeper(settings.kafka_timeout_seconds),
        model_ids=model_ids,
        metrics=OperatorMetrics(kube.writes),
    )


async def _serve_metrics(
    rec: Reconciler, controller: Controller, caches: WatchCaches, registry: CollectorRegistry
) -> web.AppRunner:
    """The operator's /metrics, read from the work queue and the servings' cache when scraped."""

    def queue() -> QueueState:
        q = controller.queue
        return QueueState(q.waiting(), q.active(), q.oldest_wait(), len(controller.retries))

    rec.metrics.observe(queue, caches.servings)
    controller.queue.on_wait = rec.metrics.waited
    return await serve_metrics(registry, rec.settings.metrics_port, rec.settings.metrics_path)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    rec: Reconciler = memo.reconciler
    memo.controller.close()
    if watches := getattr(memo, "child_watches", None):
        await watches.close()
    for task in getattr(memo, "orphan_checks", ()):
        task.cancel()
    await rec.topics.close()
    await rec.kube.close()
    if server := getattr(memo, "metrics_server", None):
        await server.cleanup()
    if exits := getattr(memo, "exits", None):
        await exits.aclose()  # the spans still queued are sent


# The index functions are coroutines: kopf runs plain functions in a thread pool, a hop per event
# that costs more than the function.
@kopf.index(api.GROUP, api.VERSION, api.PLURAL, id=SERVINGS_INDEX)
async def index_serving(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str], CachedObject]:
    return {(namespace, name): CachedObject.of(body, api.KIND)}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL, id=MODEL_IDS_INDEX)
async def index_model_id(body: kopf.Body, **_: Any) -> dict[int, dict[str, str]]:
    return model_id_claim(body)


@kopf.index(api.GROUP, api.VERSION, api.PLURAL, id=SOURCE_READERS_INDEX)
async def index_source_readers(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str, str], str]:
    server = (body.get("spec") or {}).get("server") or {}
    sources = env_sources(server.get("env") or [], server.get("envFrom") or [])
    return {(namespace, kind, source): name for kind, source in sources}


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def serving_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    assert namespace is not None  # ModelServings are namespaced
    key = (namespace, name)
    if type == "DELETED":
        memo.controller.forget(key)
        memo.reconciler.forget(key)
        binding = await _delete_binding(memo.reconciler, ServingSpec.from_body(body))
        log.info("ModelServing %s/%s deleted%s", namespace, name, binding)
        if key not in kwargs[SERVINGS_INDEX]:
            return
        # One of its name made anew (its listing came first): reconciled.
    _mark(memo, key, kwargs, serving_event=True)


def _mark(memo: kopf.Memo, key: Key, kwargs: Mapping[str, Any], *, serving_event: bool) -> None:
    """Mark the serving in the controller's work queue, and start the controller's workers and
    checks with the first event: from a handler (kopf_internals.start_in_handler_context).
    (The controller, the caches and the Reconciler, not the memo: kopf gives each object a
    copy of the memo.)"""
    rec: Reconciler = memo.reconciler
    caches: WatchCaches = memo.caches
    controller: Controller = memo.controller
    caches.indexes = live_indexes(kwargs, INDEXES)
    controller.start(
        # The roll for Secrets (if it may read them) and ConfigMaps read at start.
        lambda: check_sources_forever(rec, caches.source_readers, controller.queue),
        lambda: check_topics_forever(rec, controller.queue),  # topic_checks
        lambda: Autoscaler(rec.kube, caches).forever(),  # servings that scale on concurrency
        lambda: follow_activator_forever(rec, caches, controller.queue),  # at zero
    )
    controller.mark(key, serving_event=serving_event)


async def _delete_binding(rec: Reconciler, spec: ServingSpec) -> str:
    """Namespaced children go with the serving (ownerReferences); the cluster-scoped binding
    cannot be owned by it, so it goes here, if it is the serving's. What was done, for the log
    (empty when the serving had no binding)."""
    if spec.auth.mode != "kubernetes":
        return ""
    name = cluster_role_binding_name(spec)
    binding = await rec.kube.get("ClusterRoleBinding", name)
    if binding is None:
        return f"; its ClusterRoleBinding {name} was already gone"
    if not made_for(binding, spec):
        return f"; the ClusterRoleBinding {name} is a new serving's of its name: kept"
    rv = binding["metadata"]["resourceVersion"]
    try:  # as read: one of its name made anew may have taken it over since
        await rec.kube.delete("ClusterRoleBinding", name, resource_version=rv)
    except KubeError as exc:
        if exc.status != 409:
            raise
        return f"; the ClusterRoleBinding {name} was taken over by a new serving: kept"
    return f"; its ClusterRoleBinding {name} deleted"


def _child_told(
    memo: kopf.Memo, kind: Watched, change: Change, body: Mapping[str, Any] | None, key: Key
) -> None:
    """A child or pod of the serving of `key` changed (the operator's own streams): the
    serving is marked, if the cache holds it; a binding of a serving it does not hold may be
    an orphan's."""
    caches: WatchCaches = memo.caches
    if caches.has_serving(key):
        memo.controller.mark(key, serving_event=False)
    elif kind.kind == "ClusterRoleBinding" and change != "DELETED" and body is not None:
        task = asyncio.create_task(_delete_orphan_binding(memo, body["metadata"]["name"], key))
        memo.orphan_checks.add(task)
        task.add_done_callback(memo.orphan_checks.discard)


async def _delete_orphan_binding(memo: kopf.Memo, name: str, key: Key) -> None:
    """A serving's binding whose serving is gone (deleted while no operator ran)."""
    rec: Reconciler = memo.reconciler
    caches: WatchCaches = memo.caches
    namespaces = rec.settings.namespaces
    if namespaces and key[0] not in namespaces:
        return  # another operator's serving
    # At the start, its serving may be listed but not yet indexed: once every stream has
    # listed and kopf has indexed what it listed, the cache is asked again; and the API server,
    # since kopf may not have begun its indexing when the binding came.
    await memo.watched.all_listed()
    await all_indexed()
    try:
        if caches.has_serving(key) or await rec.kube.get(api.KIND, key[1], key[0]) is not None:
            return
        await rec.kube.delete("ClusterRoleBinding", name)
    except KubeError as exc:
        log.warning("deleting the orphan ClusterRoleBinding %s failed: %s", name, exc)
        return
    log.info("ClusterRoleBinding %s deleted: its serving %s/%s is gone", name, *key)
