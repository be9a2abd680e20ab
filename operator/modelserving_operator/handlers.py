"""The kopf handlers: thin edges that hand every event of a serving or its children to reconcile.

The operator is level-triggered: a serving's event, or any event of a child it
owns (edited or deleted by hand, a Deployment's pods becoming ready), marks the
serving in a work queue, and a fixed number of workers run the same reconcile
against the watch caches (kopf indexes), one serving at a time each. Nothing
here makes kopf write to the resources (no finalizers, no progress annotations).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kopf
from aiohttp import web

from modelserving import api
from modelserving_operator.kafka.topic_checks import check_topics_forever
from modelserving_operator.kafka.topics import TopicKeeper
from modelserving_operator.kube import KubeClient, KubeError
from modelserving_operator.metrics import OperatorMetrics, QueueState, registry_of, serve_metrics
from modelserving_operator.modelids import ModelIds, model_id_claim
from modelserving_operator.names import (
    LABEL_SERVING_NAME,
    LABEL_SERVING_NAMESPACE,
    cluster_role_binding_name,
    made_for,
)
from modelserving_operator.pod_env.checks import Readers, check_sources_forever
from modelserving_operator.pod_env.sources import Source, env_sources
from modelserving_operator.reconcile import Again, Reconciler, reconcile
from modelserving_operator.runtime.cached import CachedObject
from modelserving_operator.runtime.kopf_internals import (
    WatchedObjects,
    all_indexed,
    cache_current,
    wrap_watch_streams,
)
from modelserving_operator.runtime.peering import peering_priority
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.model_report import tfserving_exited
from modelserving_sidecar.log.status import ANNOTATION as LOG_STATUS_ANNOTATION

log = logging.getLogger(__name__)

MANAGED = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
# (group, version, plural, kind) of every kind of child.
CHILD_RESOURCES = [
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "services", "Service"),
    ("", "v1", "serviceaccounts", "ServiceAccount"),
    ("apps", "v1", "deployments", "Deployment"),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy"),
    ("networking.k8s.io", "v1", "ingresses", "Ingress"),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding"),
]
SERVINGS_INDEX = "servings"
# The serving's pods are watched, not owned: their annotations feed the status (LoggingReady,
# ModelReady, AuthReady, status.versions).
PODS_INDEX = "serving_pods"
# Which servings' pods read each Secret and ConfigMap at start (env_sources), so that a change
# of one (env_source_checks reads them by name; they are not watched) marks only those.
SOURCE_READERS_INDEX = "source_readers"
# The servings whose status holds each modelId: ids above them are the fresh ones, and an id
# two hold is kept by the first made (modelids).
MODEL_IDS_INDEX = "model_ids"
WATCHED_PLURALS = (api.PLURAL, "pods", *(plural for _, _, plural, _ in CHILD_RESOURCES))
INDEXES = (
    SERVINGS_INDEX,
    PODS_INDEX,
    SOURCE_READERS_INDEX,
    MODEL_IDS_INDEX,
    *(f"children_{plural}" for _, _, plural, _ in CHILD_RESOURCES),
)


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies every object on every event to find what changed since it was last
    handled, for change handlers (on.create, on.update) and daemons. The operator has none,
    only event handlers and indexes: nothing is copied, kept or written for them."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class RetryForever:
    """kopf's delays between the tries of an API request: a few quick ones, then one every
    10 s without end (an iterable without a length is endless to kopf, and each request
    iterates it anew)."""

    FIRST = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0)
    THEN = 10.0

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.FIRST, itertools.repeat(self.THEN))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours: OperatorSettings = memo.settings
    # kopf's defaults can overload an API server with many resources: set them on purpose.
    # kopf's own worker limit would deadlock with indexes in kopf as it ships (workers parked
    # until every index is filled hold every slot; see kopf_internals), so its per-object
    # workers stay unlimited (coroutines are cheap) and the limit applies to concurrent
    # reconciles instead (--worker-limit, the Reconciler's workers).
    settings.batching.worker_limit = None
    # Handlers only mark servings in the work queue; a serving's burst of events is one
    # reconcile, run by one of these workers, at most `worker_limit` at once.
    for group, version, plural, _kind in [*CHILD_RESOURCES, ("", "v1", "pods", "Pod")]:
        # Filter children on the server: the operator never sees unrelated objects.
        resource = (group, version, plural) if group else (version, plural)
        settings.watching.label_selectors[resource] = f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}"
    settings.networking.request_timeout = ours.api_timeout_seconds  # a hung call is retried
    # kopf gives up on a request after its retries (54 s in all), and a watch given up on
    # is never renewed: an API server away longer (a restart of a loaded one) left the
    # operator deaf until restarted. It retries for as long as the API server is away.
    settings.networking.error_backoffs = RetryForever()
    settings.networking.connect_timeout = min(10.0, ours.api_timeout_seconds)
    settings.watching.server_timeout = int(ours.watch_timeout_seconds)  # renew watches regularly
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.watching.connect_timeout = min(10.0, ours.api_timeout_seconds)
    settings.persistence.diffbase_storage = _NoDiffBase()
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
    kube = KubeClient.connect(ours.api_concurrency, ours.api_timeout_seconds)
    memo.reconciler = rec = Reconciler(
        kube=kube,
        settings=ours,
        topics=TopicKeeper(ours.kafka_timeout_seconds),
        model_ids=ModelIds(
            kube,
            ours.operator_namespace,
            lambda: _servings_without_id(rec),
            holders=lambda model_id: rec.indexes.get(MODEL_IDS_INDEX, {}).get(model_id, ()),
            in_use=lambda: rec.indexes.get(MODEL_IDS_INDEX, {}).keys(),
            remark=lambda key: rec.queue.add(key, serving_event=True),
        ),
        metrics=OperatorMetrics(kube.writes),
    )
    # What a stream's fresh listing no longer returns is told DELETED (kopf tells nothing of
    # it); the serving's DELETED handler reads its spec (its binding's name).
    watched = WatchedObjects(WATCHED_PLURALS, with_spec=(api.PLURAL,))
    wrap_watch_streams(rec.metrics.watches, watched)
    if ours.metrics_port:
        memo.metrics_server = await _serve_metrics(memo.reconciler)


def _servings_without_id(rec: Reconciler) -> int:
    """Servings the watch cache holds that have no modelId yet (each will take one)."""
    return sum(rec.model_ids.recorded(serving) is None for serving in _cached_servings(rec))


async def _serve_metrics(rec: Reconciler) -> web.AppRunner:
    """The operator's /metrics, read from the work queue and the servings' cache when scraped."""

    def queue() -> QueueState:
        q = rec.queue
        return QueueState(q.waiting(), q.active(), q.oldest_wait(), len(rec.retries))

    rec.metrics.observe(queue, lambda: _cached_servings(rec))
    rec.queue.on_wait = rec.metrics.waited
    registry = registry_of(rec.metrics)
    return await serve_metrics(registry, rec.settings.metrics_port, rec.settings.metrics_path)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    rec: Reconciler = memo.reconciler
    for task in rec.workers:
        task.cancel()
    for handle in [*rec.retries.values(), *rec.waits.values()]:
        handle.cancel()
    await rec.topics.close()
    await rec.kube.close()
    if server := getattr(memo, "metrics_server", None):
        await server.cleanup()


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


def _cached_servings(rec: Reconciler) -> Iterator[dict[str, Any]]:
    """Every serving the cache holds, parsed."""
    for store in (rec.indexes.get(SERVINGS_INDEX) or {}).values():
        for cached in store:
            yield cached.parsed()


def _serving_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    labels = body["metadata"].get("labels") or {}
    if body["metadata"].get("namespace"):
        name = labels.get(api.LABEL_INSTANCE)
        return (body["metadata"]["namespace"], name) if name else None
    namespace, name = (
        labels.get(LABEL_SERVING_NAMESPACE),
        labels.get(LABEL_SERVING_NAME),
    )
    return (namespace, name) if namespace and name else None


def _register_child(group: str, version: str, plural: str, kind: str) -> None:
    index_id = f"children_{plural}"

    async def index_child(body: kopf.Body, **_: Any) -> dict[tuple[str, str], CachedObject]:
        key = _serving_of(body)
        return {key: CachedObject.of(body, kind)} if key else {}

    async def child_event(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        key = _serving_of(body)
        if key is None:
            return
        if key not in kwargs[SERVINGS_INDEX]:
            if kind == "ClusterRoleBinding" and type != "DELETED":
                await _delete_orphan_binding(memo, body, key, kwargs[SERVINGS_INDEX])
            return
        _enqueue(memo, key, kwargs, serving_event=False)

    kopf.index(group, version, plural, labels=MANAGED, id=index_id)(index_child)
    kopf.on.event(group, version, plural, labels=MANAGED, id=f"{plural}_event")(child_event)


for _resource in CHILD_RESOURCES:
    _register_child(*_resource)


@kopf.index("", "v1", "pods", labels=MANAGED, id=PODS_INDEX)
async def index_pod(name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """What the status needs of a serving's pod: its name, whether it is Ready, its
    sidecar's reports (the log's health, what TF Serving says of the model), and how its TF
    Serving container last ended if the kubelet restarted it."""
    key = _serving_of(body)
    if key is None:
        return {}
    annotations = body["metadata"].get("annotations") or {}
    conditions = (body.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return {
        key: {
            "name": name,
            "ready": ready,
            "logStatus": annotations.get(LOG_STATUS_ANNOTATION),
            "modelReport": annotations.get(api.MODEL_REPORT_ANNOTATION),
            "tfservingExited": tfserving_exited(body.get("status")),
        }
    }


@kopf.on.event("", "v1", "pods", labels=MANAGED, id="pods_event")
async def pod_event(type: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    key = _serving_of(body)
    if key is not None and key in kwargs[SERVINGS_INDEX]:
        _enqueue(memo, key, kwargs, serving_event=False)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def serving_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    assert namespace is not None  # ModelServings are namespaced
    key = (namespace, name)
    rec: Reconciler = memo.reconciler
    if type == "DELETED":
        # Namespaced children go with the serving (ownerReferences); the cluster-scoped
        # binding cannot be owned by it, so it goes here, if it is the serving's.
        rec.forget(key)
        spec = ServingSpec.from_body(body)
        if spec.auth.mode == "kubernetes":
            name = cluster_role_binding_name(spec)
            binding = await rec.kube.get("ClusterRoleBinding", name)
            if binding is not None and made_for(binding, spec):  # not a new one's of its name
                rv = binding["metadata"]["resourceVersion"]
                try:  # as read: one of its name made anew may have taken it over since
                    await rec.kube.delete("ClusterRoleBinding", name, resource_version=rv)
                except KubeError as exc:
                    if exc.status != 409:
                        raise
        if key in kwargs[SERVINGS_INDEX]:  # one of its name made anew (its listing came first)
            _enqueue(memo, key, kwargs, serving_event=True)
        return
    _enqueue(memo, key, kwargs, serving_event=True)


def _sources_read(serving: Mapping[str, Any]) -> tuple[Source, ...]:
    server = (serving.get("spec") or {}).get("server") or {}
    return env_sources(server.get("env") or [], server.get("envFrom") or [])


@kopf.index(api.GROUP, api.VERSION, api.PLURAL, id=SOURCE_READERS_INDEX)
async def index_source_readers(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str | None, str, str], str]:
    return {(namespace, kind, source): name for kind, source in _sources_read(body)}


def _source_readers(rec: Reconciler) -> Callable[[], Readers]:
    """Which servings read each Secret and ConfigMap, as the servings' index says when called."""
    return lambda: rec.indexes.get(SOURCE_READERS_INDEX) or {}


def _enqueue(
    memo: kopf.Memo, key: tuple[str, str], kwargs: Mapping[str, Any], *, serving_event: bool
) -> None:
    rec: Reconciler = memo.reconciler
    # kopf's indexes are live objects, the same on every call: the workers read them. (The
    # Reconciler, not the memo: kopf gives each object a copy of the memo.)
    rec.indexes = {name: kwargs.get(name, {}) for name in INDEXES}
    if not rec.workers:
        # Started from a handler, not at startup: kopf.event() needs the event poster that
        # kopf sets in its handlers' context, and tasks inherit the context they start in.
        rec.workers = [asyncio.create_task(_work(memo)) for _ in range(rec.settings.worker_limit)]
        # The roll for Secrets (if it may read them) and ConfigMaps read at start.
        readers = _source_readers(rec)
        rec.workers.append(asyncio.create_task(check_sources_forever(rec, readers)))
        rec.workers.append(asyncio.create_task(check_topics_forever(rec)))  # topic_checks
    rec.queue.add(key, serving_event=serving_event)


def release_startup_memory() -> None:
    """Give back what the first listing of every object left free. A start over a thousand
    servings handles thousands of objects at once, and the freed heap stays resident unless
    returned (glibc's malloc_trim; a no-op elsewhere). Once, after the first catch-up."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _work(memo: kopf.Memo) -> None:
    """One worker: reconcile the servings the queue hands out, one at a time, once the indexes
    hold every object listed at the start; none while kopf pauses the operator (a standby of
    peering) or a watch stream lists anew (see cache_current)."""
    rec: Reconciler = memo.reconciler
    await all_indexed()
    while True:
        key, serving_event = await rec.queue.get()
        await cache_current()  # the serving taken waits too, then reads the caches as they are
        started, outcome = time.monotonic(), "error"
        try:
            outcome = await _reconcile(memo, key, rec.indexes, from_serving_event=serving_event)
        except Exception:  # a bug must not take the worker with it
            log.exception("reconciling %s/%s failed", *key)
            _retry_later(memo, key, rec.settings.retry_seconds)
        finally:
            rec.queue.done(key)
            rec.metrics.reconciled(outcome, time.monotonic() - started)
        if rec.queue.idle() and rec.reconciled:
            log.info(
                "caught up: %d servings reconciled, %d writes since the start",
                len(rec.reconciled),
                rec.writes,
            )
            if not rec.caught_up:
                rec.caught_up = True
                release_startup_memory()


async def _reconcile(
    memo: kopf.Memo, key: tuple[str, str], indexes: Mapping[str, Any], *, from_serving_event: bool
) -> str:
    """Reconcile one serving; returns the outcome the metrics count (metrics.OUTCOMES)."""
    rec: Reconciler = memo.reconciler
    cached = next(iter(indexes[SERVINGS_INDEX].get(key, [])), None)
    serving = cached.parsed() if cached is not None else None
    if serving is None or serving["metadata"].get("deletionTimestamp"):
        return "gone"  # gone or going: the garbage collector removes the children
    children = [
        child
        for _, _, plural, _ in CHILD_RESOURCES
        for child in indexes[f"children_{plural}"].get(key, [])
    ]
    pods = list(indexes[PODS_INDEX].get(key, []))
    try:
        again = await reconcile(
            rec, serving, children, pods=pods, from_serving_event=from_serving_event
        )
    except KubeError as exc:
        log.warning("reconciling %s/%s failed, retrying: %s", *key, exc)
        again = Again(rec.settings.retry_seconds, failed=True)
    if again is None:
        return "done"
    if again.failed:
        _retry_later(memo, key, again.seconds)
        return "retry"
    _mark_later(rec, rec.waits, key, again.seconds)
    return "done"


def _retry_later(memo: kopf.Memo, key: tuple[str, str], delay: float) -> None:
    rec: Reconciler = memo.reconciler
    _mark_later(rec, rec.retries, key, delay)


def _mark_later(
    rec: Reconciler,
    timers: dict[tuple[str, str], asyncio.TimerHandle],
    key: tuple[str, str],
    delay: float,
) -> None:
    """Mark the serving again in `delay` seconds, unless `timers` holds a sooner mark of it."""
    loop = asyncio.get_running_loop()
    if (pending := timers.get(key)) is not None:
        if pending.when() <= loop.time() + delay:
            return
        pending.cancel()

    def again() -> None:
        timers.pop(key, None)
        rec.queue.add(key, serving_event=True)

    timers[key] = loop.call_later(delay, again)


async def _delete_orphan_binding(
    memo: kopf.Memo, body: Mapping[str, Any], key: tuple[str, str], servings: kopf.Index[Any, Any]
) -> None:
    """A serving's binding whose serving is gone (deleted while no operator ran)."""
    rec: Reconciler = memo.reconciler
    watched = rec.settings.namespaces
    if watched and key[0] not in watched:
        return  # another operator's serving
    await all_indexed()  # at the start, its serving may be listed but not yet indexed
    if key in servings:
        return
    await rec.kube.delete("ClusterRoleBinding", body["metadata"]["name"])
