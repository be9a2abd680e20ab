"""Bring one serving's children and status in line with its spec, writing only what differs.

Called for every event of a serving or of one of its children, with the
children as the operator's watch caches see them: what matches is not
written, so a restart over unchanged resources makes no request that writes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import kopf

from modelserving import api
from modelserving.inferencelog.record import SCHEMA
from modelserving.inferencelog.schema_registry import (
    REGISTRY_REASONS,
    RegistryProblem,
    subject_of,
)
from modelserving.kafka_security.settings import AUTHENTICATION_FAILED, TLS_FAILED
from modelserving_operator.autoscaler.endpoints import ActivatorEndpoints, pod_endpoints
from modelserving_operator.caches import WatchCaches
from modelserving_operator.kafka.schema_registry import (
    SchemaRegistrySpec,
    logging_state,
    register_schema,
    registry_of,
    registry_secrets,
)
from modelserving_operator.kafka.schema_registry import (
    what_to_check as registry_what_to_check,
)
from modelserving_operator.kafka.security import (
    FIELD,
    MissingCredentials,
    admin_secrets,
    admin_security,
    what_to_check,
)
from modelserving_operator.kafka.topics import (
    TOPIC_CREATION_FAILED,
    TOPIC_MISMATCH,
    TOPIC_READY,
    KnownTopic,
    TopicKeeper,
    TopicOutcome,
    TopicSettings,
    topic_state,
)
from modelserving_operator.kube import KubeClient, KubeError
from modelserving_operator.metrics import OperatorMetrics
from modelserving_operator.modelids import ModelIds
from modelserving_operator.names import (
    SECRETS_CHECKSUM_ANNOTATION,
    owned_by,
    selector_labels,
    versions_configmap_name,
)
from modelserving_operator.pod_env.sources import (
    SourceRead,
    env_reads,
    env_sources,
    kinds_read,
    values_digest,
    versions_checksum,
)
from modelserving_operator.policy import (
    INGRESS_REFUSED,
    SPOOL_CLAIM_SHARED,
    TOPIC_REFUSED,
    refused_degraded,
)
from modelserving_operator.render.config_maps import ROUTING_KEY, routed_buckets
from modelserving_operator.render.manifests import render_children
from modelserving_operator.render.network import render_endpoint_slice
from modelserving_operator.runtime.cached import CachedObject
from modelserving_operator.runtime.controller import Again, Outcome
from modelserving_operator.runtime.kopf_internals import event_target
from modelserving_operator.runtime.workqueue import Key
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import (
    APPLY_FAILED,
    CONFLICT,
    POD_REASONS,
    ApplyFailure,
    Condition,
    LoggingState,
    deployment_conditions,
    logging_condition,
    logging_from_pods,
    progress_only,
    render_status,
    status_changed,
)
from modelserving_operator.status.model_report import (
    ModelStatus,
    event_for,
    model_status,
    progressing_with_pods,
    ready_with_pods,
)

log = logging.getLogger(__name__)

# A status write that only tells a rollout's progress (replica counts, messages) waits until
# this long after the serving's last status write, and goes with what has changed by then:
# a thousand servings rolling out at once would otherwise write each status four or five
# times on the way to Ready, each write an API request the others wait behind.
PROGRESS_WRITE_SECONDS = 5.0


@dataclass(frozen=True)
class UnseenStatus:
    """A status the operator wrote whose event the watch cache has not shown yet."""

    status: Mapping[str, Any]
    # The serving's versions from before that write: the one it was written over, and those
    # earlier writes of the operator made while the cache still showed an older one (their
    # events come first, in order, and are older than this status too).
    older: frozenset[str]
    made: str  # the version the write made


@dataclass(frozen=True)
class KafkaSeen:
    """What the operator found of the inference log's topics, kept between reconciles."""

    # Per (brokers, topic): the topic as last created, described or checked again
    # (topic_checks).
    topics: dict[tuple[str, str], KnownTopic] = field(default_factory=dict)
    # Per serving: the (brokers, topic) it logs to, once found.
    users: dict[Key, tuple[str, str]] = field(default_factory=dict)
    # Per serving: the operator's own failure to reach its Kafka (_OPERATOR_UNSEEN), as its
    # last topic check told it. Events that do not check Kafka again (a pod's) keep it, so
    # LoggingReady is judged alike whatever reconciles the serving (logging_from_pods).
    unseen: dict[Key, LoggingState] = field(default_factory=dict)
    # Per (registry URL, subject): the id the registry gave the inferencelog schema, once
    # registered (the same schema under the same subject keeps its id).
    schemas: dict[tuple[str, str], int] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.users.pop(key, None)
        self.unseen.pop(key, None)


@dataclass(frozen=True)
class SourcesSeen:
    """The Secrets and ConfigMaps servings' pods read at start (env_sources), as last read;
    memory only."""

    # Per serving whose pods read some: the digest its pod template carries of them, and a
    # digest of the values read.
    digests: dict[Key, tuple[str, str]] = field(default_factory=dict)
    # Per (namespace, kind, name) read: its version when last read, which
    # pod_env.checks compares.
    versions: dict[tuple[str, str, str], str | None] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.digests.pop(key, None)


@dataclass(frozen=True)
class ServingMemory:
    """What reconciling a serving leaves for its next reconcile."""

    # What the children were last found to match: the render key ((uid, generation, modelId,
    # the sources' digest)) and each child's (kind, name, resourceVersion); while both hold,
    # nothing is rendered again.
    verified: dict[Key, tuple[tuple[object, ...], frozenset[tuple[object, ...]]]] = field(
        default_factory=dict
    )
    # The reasons last told in an Event, per serving (ModelReady, AuthReady, a Conflict, a
    # refusal): the watch cache may still hold the status before our last write, and an Event
    # goes once per change.
    told: dict[Key, dict[str, str]] = field(default_factory=dict)
    # When each serving's status was last written (monotonic seconds), for
    # PROGRESS_WRITE_SECONDS.
    status_written: dict[Key, float] = field(default_factory=dict)
    # The status last written to each serving, until the watch cache holds the version that
    # write made, or any after it: meanwhile the cache's status is older than the API server's.
    status_unseen: dict[Key, UnseenStatus] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.verified.pop(key, None)
        self.told.pop(key, None)
        self.status_written.pop(key, None)
        self.status_unseen.pop(key, None)


@dataclass
class Reconciler:
    """What reconciling needs: the clients, the settings, and what it keeps between
    reconciles."""

    kube: KubeClient
    settings: OperatorSettings
    topics: TopicKeeper
    model_ids: ModelIds
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    kafka: KafkaSeen = field(default_factory=KafkaSeen)
    sources: SourcesSeen = field(default_factory=SourcesSeen)
    memory: ServingMemory = field(default_factory=ServingMemory)
    # The activator's ready pods (autoscaler/activator_endpoints follows them): where the
    # endpoints of a serving at zero point.
    activator: ActivatorEndpoints = field(default_factory=ActivatorEndpoints)
    writes: int = 0  # since the start: creates, applies, deletes and status writes

    def forget(self, key: Key) -> None:
        """The serving is gone: drop what is kept of it between reconciles."""
        self.kafka.forget(key)
        self.sources.forget(key)
        self.memory.forget(key)


def covers(live: Any, desired: Any) -> bool:
    """Whether the live object already holds every field we set, as we set it."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and covers(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def _ref(serving: Mapping[str, Any]) -> kopf.Body:
    """The serving as kopf's event poster needs it (list items lack kind and apiVersion)."""
    ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": serving["metadata"]}
    return event_target(ref)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile_cached(
    rec: Reconciler, caches: WatchCaches, key: Key, serving_event: bool
) -> Outcome:
    """Reconcile the serving of `key` as the watch caches hold it and its children and pods
    (the controller's reconcile); an API error is retried after --retry-seconds."""
    serving = caches.serving(key)
    if serving is None or serving["metadata"].get("deletionTimestamp"):
        return "gone"  # gone or going: the garbage collector removes the children
    try:
        return await reconcile(
            rec,
            serving,
            caches.children(key),
            pods=caches.pods(key),
            from_serving_event=serving_event,
        )
    except KubeError as exc:
        log.warning("reconciling %s/%s failed, retrying: %s", *key, exc)
        return Again(rec.settings.retry_seconds, failed=True)


async def reconcile(
    rec: Reconciler,
    serving: Mapping[str, Any],
    children: Iterable[CachedObject],
    *,
    pods: Iterable[Mapping[str, Any]] = (),
    from_serving_event: bool,
) -> Again | None:
    """Apply what differs and write the status; returns when to reconcile again, if ever.

    The work queue runs one reconcile of a serving at a time. Its steps: the serving's modelId,
    its children, what the children, the pods and Kafka say of it, and its status."""
    serving = _with_status_written(rec, serving)
    spec = ServingSpec.from_body(serving)
    found = await _model_id(rec, serving, from_serving_event)
    if found is None:
        return None  # only the serving's own events take ids
    model_id, assigned = found
    pods = list(pods)
    # The EndpointSlice follows the pods, not the spec alone: a step of its own.
    slices: list[CachedObject] = []
    others: list[CachedObject] = []
    for child in children:
        (slices if child.kind == "EndpointSlice" else others).append(child)
    children = others
    applied = await _children(rec, serving, spec, model_id, children)
    _post_changes(serving, applied.done, model_id if assigned else None)
    taken = await _endpoints(rec, spec, slices, pods)
    if taken is not None and applied.failure is None:
        # Told as the other children's names are: a Conflict, Ready False (no endpoints).
        applied = replace(applied, failure=_taken_failure(spec, [taken]))
    observed = await _observe(rec, serving, spec, applied, pods, from_serving_event)
    wait = await _write_status(rec, serving, spec, model_id, observed)
    return _again(rec, spec, applied, observed, wait)


async def _model_id(
    rec: Reconciler, serving: Mapping[str, Any], from_serving_event: bool
) -> tuple[int, bool] | None:
    """The serving's modelId, and whether this reconcile assigned it; None when it has none
    and this is not the serving's own event (only those take ids).

    Only an id the operator issued to this serving counts (see modelids). A new one is
    written with the serving's status (_write_status), not on its own: until then, the
    operator's record of it by the serving's uid holds it."""
    model_id = rec.model_ids.recorded(serving)
    if model_id is not None:
        return model_id, False
    if not from_serving_event:
        return None
    return await rec.model_ids.take(serving["metadata"]["uid"]), True


def _with_status_written(rec: Reconciler, serving: Mapping[str, Any]) -> Mapping[str, Any]:
    """The serving with the status the operator last wrote to it, while the watch cache still
    holds a version from before that write (its event has not come yet): what the API server
    holds. A reconcile in between (a child's event, a pod's, or the event of an earlier status
    write) otherwise compares with an older status, and writes again what the last write
    said."""
    key = (serving["metadata"]["namespace"], serving["metadata"]["name"])
    unseen = rec.memory.status_unseen.get(key)
    if unseen is None:
        return serving
    if serving["metadata"].get("resourceVersion") not in unseen.older:
        del rec.memory.status_unseen[key]  # the write's version or a later one: its status counts
        return serving
    return {**serving, "status": unseen.status}


async def _endpoints(
    rec: Reconciler,
    spec: ServingSpec,
    slices: Iterable[CachedObject],
    pods: Sequence[Mapping[str, Any]],
) -> Mapping[str, Any] | None:
    """The EndpointSlice of a serving that may go to zero: its ready pods, or while none is,
    the activator's (autoscaler/endpoints); made (POST) when there is none, applied when it
    says otherwise, deleted when the serving no longer may go to zero (the EndpointSlice
    controller follows the Service's selector again), as the other children are (_apply). One
    of the serving's name that is not its own, in the cache or not, is never written (a POST
    does not take an object over): it is returned, for the status to tell."""
    cached = next((c for c in slices if c.name == spec.name), None)
    live = cached.parsed() if cached is not None else None
    if live is not None and not owned_by(live, spec):
        if spec.autoscaling.to_zero:
            log.warning(_FOREIGN_SLICE, spec.namespace, spec.name)
            return live
        return None  # not the serving's, nor needed by it
    if not spec.autoscaling.to_zero:
        if live is not None:
            await rec.kube.delete("EndpointSlice", spec.name, spec.namespace)
            rec.writes += 1
        return None
    endpoints = pod_endpoints(spec.namespace, pods) or list(rec.activator.endpoints)
    wanted = render_endpoint_slice(spec, endpoints)
    if live is not None and covers(live, wanted):
        return None
    answer = await _apply(rec.kube, spec, wanted, exists=live is not None)
    if answer is None:  # of its name, not in the cache, and not the serving's
        log.warning(_FOREIGN_SLICE, spec.namespace, spec.name)
        return wanted
    if isinstance(answer, KubeError):
        raise answer
    if not isinstance(answer, AlreadyThere):
        rec.writes += 1
    return None


_FOREIGN_SLICE = (
    "the EndpointSlice %s/%s is not the serving's own: left as it is, and the serving's "
    "endpoints are not written (delete or rename it)"
)


@dataclass(frozen=True)
class Applied:
    """What the children step leaves: the serving's Deployment as it now is (None: none of the
    serving's), the first failure to make the children as the spec wants them, and what was
    created, updated and deleted."""

    deployment: Mapping[str, Any] | None
    failure: ApplyFailure | None
    done: Mapping[str, list[str]]


async def _children(
    rec: Reconciler,
    serving: Mapping[str, Any],
    spec: ServingSpec,
    model_id: int,
    children: Iterable[CachedObject],
) -> Applied:
    """Bring the children in line with the spec (_apply_children), unless they are as they
    were last found to match it (ServingMemory.verified): then nothing is parsed or rendered."""
    key = (spec.namespace, spec.name)
    cached = {(c.kind, c.name): c for c in children}
    deployment: Mapping[str, Any] | None = None
    if cached_deployment := cached.get(("Deployment", key[1])):
        deployment = cached_deployment.parsed()
        if not owned_by(deployment, spec):  # someone else's, of the serving's name (Conflict)
            deployment = None
    # An operator that may not read Secrets rolls no pods for them (ConfigMaps alone count).
    checksum = await _sources_checksum(rec, spec, deployment)
    render_key = (
        serving["metadata"]["uid"],
        serving["metadata"].get("generation"),
        model_id,
        checksum,
    )
    seen = frozenset((*k, c.resource_version) for k, c in cached.items())
    if rec.memory.verified.get(key) == (render_key, seen):
        return Applied(deployment, None, {})
    live = {
        k: deployment if k[0] == "Deployment" and deployment else c.parsed()
        for k, c in cached.items()
    }
    deployment, failure, done = await _apply_children(
        rec, serving, spec, model_id, checksum, live, deployment
    )
    if failure is None and not any(done.values()):
        rec.memory.verified[key] = (render_key, seen)  # the children are as the spec wants them
    else:
        rec.memory.verified.pop(key, None)
    return Applied(deployment, failure, done)


@dataclass(frozen=True)
class Observed:
    """What the children, the pods and Kafka say of the serving, for its status."""

    deployment: Mapping[str, Any] | None
    logging: LoggingState
    model: ModelStatus
    conditions: list[Condition]  # every condition but LoggingReady, in the status's order


async def _observe(
    rec: Reconciler,
    serving: Mapping[str, Any],
    spec: ServingSpec,
    applied: Applied,
    pods: list[Mapping[str, Any]],
    check_kafka: bool,
) -> Observed:
    """The serving's conditions from its Deployment, its pods' reports and its topic (checked
    in Kafka on the serving's own events), with an Event for each that starts saying
    something new (a refusal, a Conflict, the model's or the auth's state)."""
    key = (spec.namespace, spec.name)
    logging_state = await _logging_state(rec, serving, spec, check_kafka)
    mismatch = logging_state.message if logging_state.reason == TOPIC_MISMATCH else None
    _tell_refusal(rec, serving, key, "LoggingReady", TOPIC_MISMATCH, mismatch)
    logging_state = _logging_with_pods(rec, spec, logging_state, pods)
    model = model_status(spec.model, pods)
    numbers = spec.model.loaded_versions
    rolling_to = f"version{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
    wakes = bool(rec.activator.endpoints) if spec.autoscaling.to_zero else None
    ready, progressing, *rollout = deployment_conditions(
        applied.deployment, applied.failure, rolling_to, wakes
    )
    rollout = [progressing_with_pods(progressing, model), *rollout]
    _post_conflict(rec, serving, key, applied.failure)
    if ingress_refused := spec.ingress_refusal(rec.settings):
        rollout = refused_degraded(rollout, ingress_refused)
    _tell_refusal(rec, serving, key, "Degraded", INGRESS_REFUSED, ingress_refused)
    if claim_shared := spec.spool_claim_refusal():
        rollout = refused_degraded(rollout, claim_shared, SPOOL_CLAIM_SHARED)
    _tell_refusal(rec, serving, key, "Degraded", SPOOL_CLAIM_SHARED, claim_shared)
    topic_refused = logging_state.message if logging_state.reason == TOPIC_REFUSED else None
    _tell_refusal(rec, serving, key, "LoggingReady", TOPIC_REFUSED, topic_refused)
    _post_model_events(rec, serving, key, [model.model_ready, model.auth_ready])
    if logging_state.reason in (AUTHENTICATION_FAILED, TLS_FAILED):  # say what to fix
        hint = what_to_check(logging_state.reason, spec.kafka_security(rec.settings))
        if not logging_state.message.endswith(hint):
            logging_state = replace(logging_state, message=f"{logging_state.message}; {hint}")
    conditions = [ready_with_pods(ready, model), *rollout, model.model_ready, model.auth_ready]
    return Observed(applied.deployment, logging_state, model, conditions)


async def _write_status(
    rec: Reconciler,
    serving: Mapping[str, Any],
    spec: ServingSpec,
    model_id: int,
    observed: Observed,
) -> float | None:
    """Write the status if it changed, unless it only tells a rollout's progress and waits
    (PROGRESS_WRITE_SECONDS): returns the seconds it waits, None if nothing waits."""
    key = (spec.namespace, spec.name)
    old_status = serving.get("status") or {}
    new_status = render_status(
        old_status,
        generation=serving["metadata"].get("generation", 0),
        model_id=model_id,
        model_name=spec.model.name,
        endpoint=spec.endpoint,
        topic=spec.topic if spec.logging_requested(rec.settings) else None,
        deployment=observed.deployment,
        traffic=spec.model.traffic,
        versions=observed.model.versions,
        conditions=[*observed.conditions, logging_condition(observed.logging)],
        now=_now(),
    )
    if not status_changed(old_status, new_status):
        return None
    wait = _progress_wait(rec, key, old_status, new_status)
    if wait is None:
        # Only this serving's: not one deleted and made anew under its name meanwhile.
        uid = serving["metadata"]["uid"]
        written = await rec.kube.write_status(api.KIND, key[1], key[0], uid, new_status)
        rec.writes += 1
        rec.memory.status_written[key] = time.monotonic()
        _remember_status(rec, key, serving, new_status, written)
    return wait


def _remember_status(
    rec: Reconciler,
    key: Key,
    serving: Mapping[str, Any],
    status: Mapping[str, Any],
    written: Mapping[str, Any],
) -> None:
    """Keep what a status write said until the watch cache shows the version it made."""
    over = serving["metadata"].get("resourceVersion")
    made = (written.get("metadata") or {}).get("resourceVersion")
    if not (over and made):
        return
    older = {over}
    if earlier := rec.memory.status_unseen.get(key):  # written over a version still unseen
        older |= earlier.older | {earlier.made}
    rec.memory.status_unseen[key] = UnseenStatus(status, frozenset(older), made)


def _again(
    rec: Reconciler, spec: ServingSpec, applied: Applied, observed: Observed, wait: float | None
) -> Again | None:
    """When to reconcile again: after --retry-seconds while a write failed or the operator's
    Kafka needs another look, else when the status write that waits is due."""
    logging_state = observed.logging
    checked_again = not logging_state.ready and logging_state.reason in _CHECKED_AGAIN
    unseen = (spec.namespace, spec.name) in rec.kafka.unseen
    if applied.failure or checked_again or unseen:  # the operator's Kafka, again
        retry = rec.settings.retry_seconds
        return Again(retry if wait is None else min(wait, retry), failed=True)
    return None if wait is None else Again(wait, failed=False)


def _progress_wait(
    rec: Reconciler, key: tuple[str, str], old: Mapping[str, Any], new: Mapping[str, Any]
) -> float | None:
    """Seconds the status write should wait (PROGRESS_WRITE_SECONDS), or None to write now."""
    written = rec.memory.status_written.get(key)
    if written is None or not progress_only(old, new):
        return None
    wait = written + PROGRESS_WRITE_SECONDS - time.monotonic()
    return wait if wait > 0 else None


# What the pods cannot start without (a pod naming a missing ServiceAccount is refused, one
# mounting a missing ConfigMap waits): applied first, and the rest once these are in place.
# Each wave goes out at once, as concurrent requests. The Service, NetworkPolicy and
# RoleBindings go with the Deployment, not before it: a Service's create waits on its
# ClusterIP's allocation (a second's wait with a thousand servings at once), and nothing of
# the pods' start needs them. The autoscaler names the Deployment it scales: it goes last.
_WAVES = (("ServiceAccount", "ConfigMap"), None, ("HorizontalPodAutoscaler",))  # None: the rest


def _wave_of(kind: str) -> int:
    return next((i for i, kinds in enumerate(_WAVES) if kinds and kind in kinds), 1)


def _routed_buckets(
    spec: ServingSpec, live: Mapping[tuple[str, str], Mapping[str, Any]]
) -> tuple[int, ...] | None:
    """The split's bucket table the serving's pods route by now, from its versions ConfigMap
    as found (None for a serving that lists no versions, or whose ConfigMap is not there):
    what a change of weights moves as little as it can."""
    current = live.get(("ConfigMap", versions_configmap_name(spec)))
    if current is None or not owned_by(current, spec):
        return None
    routing = (current.get("data") or {}).get(ROUTING_KEY)
    return routed_buckets(routing) if isinstance(routing, str) else None


async def _apply_children(
    rec: Reconciler,
    serving: Mapping[str, Any],
    spec: ServingSpec,
    model_id: int,
    secrets_checksum: str | None,
    live: dict[tuple[str, str], Mapping[str, Any]],
    deployment: Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any] | None, ApplyFailure | None, dict[str, list[str]]]:
    """Apply the children that differ from the spec's and delete those it no longer asks for.
    Returns the Deployment as it now is, the first failure, and what was created, updated and
    deleted.

    An object that holds a child's name and is not the serving's (names.owned_by) is never
    written, nor deleted: it is someone else's, and its owner's. Found in the cache, nothing
    is written; found when its create is refused, no later wave goes out, since those would
    use it (pods running as another's ServiceAccount, reading another's ConfigMap; an
    autoscaler scaling another's Deployment).

    A write the API server refuses or does not answer (a 429, a timeout, an admission
    webhook's or policy's denial) stops the waves too: a Deployment written after its
    ConfigMap's write failed would roll its pods onto the files they had before, under a new
    template. The failure goes to the status (ApplyFailed, naming the write) and the serving
    is reconciled again after --retry-seconds, which writes the rest once it goes through."""
    live = dict(live)
    stale: list[tuple[Mapping[str, Any], bool]] = []  # (manifest, exists)
    taken: list[Mapping[str, Any]] = []
    buckets = _routed_buckets(spec, live)
    for manifest in render_children(spec, rec.settings, model_id, secrets_checksum, buckets):
        current = live.pop((manifest["kind"], manifest["metadata"]["name"]), None)
        if current is not None and not owned_by(current, spec):
            taken.append(manifest)
        elif current is None or not (current.get("immutable") or covers(current, manifest)):
            # An immutable one (render_config's content-named) holds what its name says.
            stale.append((manifest, current is not None))
    results: list[tuple[Mapping[str, Any], bool, dict[str, Any] | AlreadyThere | KubeError]] = []
    for index in range(len(_WAVES)):
        wave = [(m, exists) for m, exists in stale if _wave_of(m["kind"]) == index]
        if taken or not wave:
            continue
        if any(isinstance(answer, KubeError) for _, _, answer in results):
            break  # the later waves use what failed: see the docstring
        answers = await asyncio.gather(*(_apply(rec.kube, spec, m, e) for m, e in wave))
        for (m, exists), answer in zip(wave, answers, strict=True):
            if answer is None:
                taken.append(m)
            else:
                results.append((m, exists, answer))
    failure = _taken_failure(spec, taken) if taken else None
    done: dict[str, list[str]] = {"Created": [], "Updated": [], "Deleted": []}
    for child, exists, answer in results:
        what = f"{child['kind']} {child['metadata']['name']}"
        if isinstance(answer, KubeError):
            failure = failure or ApplyFailure(APPLY_FAILED, f"applying {what}: {answer}")
            kopf.event(
                _ref(serving),
                type="Warning",
                reason=APPLY_FAILED,
                message=f"applying {what}: {answer}",
            )
            continue
        if isinstance(answer, AlreadyThere):
            if child["kind"] == "Deployment":
                deployment = answer.live
            continue
        rec.writes += 1
        done["Updated" if exists else "Created"].append(what)
        if child["kind"] == "Deployment":
            deployment = answer
    unwanted = {k: c for k, c in live.items() if owned_by(c, spec)}  # no longer asked for
    old_configmaps = [k for k in unwanted if k[0] == "ConfigMap"]
    if old_configmaps:  # kept while a pod may still mount one: see _configmaps_in_use
        in_use = None if failure else await _configmaps_in_use(rec.kube, spec, deployment)
        for k in old_configmaps:
            if in_use is None or k[1] in in_use:
                del unwanted[k]
    for kind, name in unwanted:
        await rec.kube.delete(kind, name, None if kind == "ClusterRoleBinding" else spec.namespace)
        rec.writes += 1
        done["Deleted"].append(f"{kind} {name}")
    return deployment, failure, done


async def _configmaps_in_use(
    kube: KubeClient, spec: ServingSpec, deployment: Mapping[str, Any] | None
) -> set[str] | None:
    """The ConfigMaps a pod of the serving may mount: those the pod template of its Deployment
    and of every ReplicaSet of the serving's labels name (None: unknown, as the list failed).

    The pods of a roll's old ReplicaSet read the content-named ConfigMaps they started with
    (render_config), so one goes only once no ReplicaSet names it. That keeps the ones of the
    ReplicaSets the Deployment keeps for its history (revisionHistoryLimit: three, each a
    ConfigMap or two), so a rollback finds its files; the deployment controller deletes older
    ReplicaSets, and a later reconcile (the Deployment's next change, or a restart) their
    ConfigMaps. Listed only when the serving has ConfigMaps it no longer asks for."""
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(spec).items())
    try:
        found = await kube.request(
            "GET",
            f"/apis/apps/v1/namespaces/{spec.namespace}/replicasets",
            params={"labelSelector": selector},
        )
    except KubeError as exc:
        log.warning(
            "ConfigMaps of %s/%s kept: listing its ReplicaSets: %s",
            spec.namespace,
            spec.name,
            exc.message,
        )
        return None
    templates = [rs.get("spec", {}).get("template", {}) for rs in found.get("items") or []]
    if deployment is not None:
        templates.append(deployment.get("spec", {}).get("template", {}))
    names: set[str] = set()
    for template in templates:
        for volume in template.get("spec", {}).get("volumes") or []:
            sources = (volume.get("projected") or {}).get("sources") or [volume]
            names.update(s["configMap"]["name"] for s in sources if "configMap" in s)
    return names


def _taken_failure(spec: ServingSpec, taken: list[Mapping[str, Any]]) -> ApplyFailure:
    """The Conflict the status tells of children's names held by objects not the serving's."""
    whats = [f"{m['kind']} {m['metadata']['name']}" for m in taken]
    one = len(whats) == 1
    return ApplyFailure(
        CONFLICT,
        f"{', '.join(whats)} already {'exists' if one else 'exist'} and "
        f"{'is' if one else 'are'} not this serving's (no ownerReference to ModelServing "
        f"{spec.name}): the operator leaves {'it' if one else 'them'} as "
        f"{'it is' if one else 'they are'} and writes nothing that would use "
        f"{'it' if one else 'them'}. Delete or rename {'it' if one else 'them'}, or give the "
        "serving another name",
    )


@dataclass(frozen=True)
class AlreadyThere:
    """A child the cache did not hold, found as the manifest has it when its create was
    refused: nothing was written."""

    live: dict[str, Any]


async def _apply(
    kube: KubeClient, spec: ServingSpec, manifest: Mapping[str, Any], exists: bool
) -> dict[str, Any] | AlreadyThere | KubeError | None:
    """The object created (the cache has not seen it) or applied, or found as it should be
    (AlreadyThere), or the API server's refusal (other errors propagate); None when an object
    not the serving's holds its name."""
    try:
        if not exists:
            try:
                return await kube.create(manifest)
            except KubeError as exc:
                if exc.status != 409:
                    raise
            # There after all: the serving's, newer than the cache (a create of an earlier
            # reconcile whose event has not come yet: nothing to write when it says what the
            # manifest says), or another's.
            meta = manifest["metadata"]
            found = await kube.get(manifest["kind"], meta["name"], meta.get("namespace"))
            if found is not None and not owned_by(found, spec):
                return None
            if found is not None and covers(found, manifest):
                return AlreadyThere(found)
        return await kube.apply(manifest)
    except KubeError as exc:
        return exc


async def _sources_checksum(
    rec: Reconciler, spec: ServingSpec, deployment: Mapping[str, Any] | None
) -> str | None:
    """The pod template's digest of the Secrets and ConfigMaps the pods read at start
    (env_sources; Secrets only if the operator may read them), each read by name now: the digest
    the template carries while the values the pods read are those it was made for, else one of
    the sources' versions now. While one of them is missing, the digest the pods have (new pods
    could not start: the running ones are kept)."""
    key = (spec.namespace, spec.name)
    kinds = kinds_read(rec.settings.read_secrets)
    keys = env_reads(spec.server.env, spec.server.env_from, kinds)
    if not keys:
        rec.sources.digests.pop(key, None)
        return None
    sources = env_sources(spec.server.env, spec.server.env_from, kinds)
    found = await asyncio.gather(*(rec.kube.get(k, n, spec.namespace) for k, n in sources))
    read = {
        (kind, name): SourceRead.of(kind, body) if body else None
        for (kind, name), body in zip(sources, found, strict=True)
    }
    for (kind, name), source in read.items():
        version = source.version if source else None
        where = (spec.namespace, kind, name)
        if where in rec.sources.versions and rec.sources.versions[where] != version:
            # The check round will not see this change (it compares with what was read last):
            # said here, as the round says the ones it finds.
            log.info(
                "%s %s/%s changed: read by the reconcile of %s",
                kind,
                spec.namespace,
                name,
                spec.name,
            )
        rec.sources.versions[where] = version
    values = values_digest(keys, read)
    if values is None:
        template = (deployment or {}).get("spec", {}).get("template", {}).get("metadata", {})
        carried: str | None = (template.get("annotations") or {}).get(SECRETS_CHECKSUM_ANNOTATION)
        return carried
    known = rec.sources.digests.get(key)
    if known is not None and known[1] == values:
        return known[0]
    checksum = versions_checksum(keys, read)
    if checksum is not None:
        rec.sources.digests[key] = (checksum, values)
    return checksum


def _post_changes(
    serving: Mapping[str, Any], done: Mapping[str, list[str]], new_model_id: int | None
) -> None:
    """One Event per kind of change; a newly assigned modelId is told in the first of them, or
    on its own when nothing changed (an Event less per new serving: a thousand at once count)."""
    told = new_model_id is None
    for verb, whats in done.items():
        if whats:
            message = f"{verb} {', '.join(whats)}"
            if not told:
                message, told = f"{message}; modelId {new_model_id}", True
            kopf.event(_ref(serving), type="Normal", reason=verb, message=message)
    if not told:
        kopf.event(
            _ref(serving),
            type="Normal",
            reason="ModelIdAssigned",
            message=f"modelId {new_model_id}",
        )


def _post_conflict(
    rec: Reconciler, serving: Mapping[str, Any], key: tuple[str, str], failure: ApplyFailure | None
) -> None:
    """A Warning when a Conflict is first told (or names other objects); retries stay quiet."""
    told = rec.memory.told.setdefault(key, _condition_reasons(serving))
    if CONFLICT not in told:  # what the status says (the last operator's word)
        conditions = (serving.get("status") or {}).get("conditions") or []
        ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        told[CONFLICT] = ready.get("message", "") if ready.get("reason") == CONFLICT else ""
    message = failure.message if failure and failure.reason == CONFLICT else ""
    if message and told[CONFLICT] != message:
        kopf.event(_ref(serving), type="Warning", reason=CONFLICT, message=message)
    told[CONFLICT] = message


def _post_model_events(
    rec: Reconciler, serving: Mapping[str, Any], key: tuple[str, str], conditions: list[Condition]
) -> None:
    """An Event when what the pods say of the model or the auth config changes reason."""
    told = rec.memory.told.setdefault(key, _condition_reasons(serving))
    for cond in conditions:
        event = event_for(told.get(cond.type), cond)
        told[cond.type] = cond.reason
        if event is not None:
            kind, reason = event
            kopf.event(_ref(serving), type=kind, reason=reason, message=cond.message)


def _condition_reasons(serving: Mapping[str, Any]) -> dict[str, str]:
    """The reasons of the serving's conditions as stored (what the last operator wrote)."""
    conditions = (serving.get("status") or {}).get("conditions") or []
    return {c["type"]: c.get("reason", "") for c in conditions if c.get("type")}


def _secrets_named(names: tuple[str, ...]) -> str:
    return ("Secret " if len(names) == 1 else "Secrets ") + ", ".join(names)


# LoggingReady of a serving whose topic the operator cannot check: its admin's credentials are
# in Secrets, and it may not read Secrets.
TOPIC_UNCHECKED = "TopicUnchecked"
# What the topic check finds that may change without an event of the serving (a broker back, a
# Secret fixed, a create refused for a while: a timeout, an authorization granted later):
# checked again after --retry-seconds.
_CHECKED_AGAIN = (
    "KafkaUnreachable",
    AUTHENTICATION_FAILED,
    TLS_FAILED,
    "KafkaCredentialsMissing",
    TOPIC_CREATION_FAILED,
    *REGISTRY_REASONS,  # a registry back, a Secret fixed, a subject's level changed by hand
)
# What the topic check says when the operator's own connection to Kafka fails, though the pods'
# producers (another network path, their own mounts) may deliver.
_OPERATOR_UNSEEN = (
    "KafkaUnreachable",
    AUTHENTICATION_FAILED,
    TLS_FAILED,
    "KafkaCredentialsMissing",
)


async def _logging_state(
    rec: Reconciler, serving: Mapping[str, Any], spec: ServingSpec, check_kafka: bool
) -> LoggingState:
    """LoggingReady as the topic and, with a schema registry, the schema's registration say."""
    state = await _topic_state(rec, serving, spec, check_kafka)
    registry = spec.schema_registry(rec.settings)
    if registry is None or not state.ready or not spec.logging_requested(rec.settings):
        return state
    return await _schema_state(rec, serving, spec, registry, state, check_kafka)


async def _schema_state(
    rec: Reconciler,
    serving: Mapping[str, Any],
    spec: ServingSpec,
    registry: SchemaRegistrySpec,
    topic: LoggingState,
    check: bool,
) -> LoggingState:
    """The schema registered under the topic's subject (once per registry and subject: the
    same schema keeps its id), or why not, with what to check; an Event once per change."""
    subject = subject_of(spec.topic)
    at = (registry.url, subject)
    if (schema_id := rec.kafka.schemas.get(at)) is None:
        previous = _previous_logging(serving)
        if not check and previous and previous["reason"] in REGISTRY_REASONS:
            return LoggingState(False, previous["reason"], previous["message"])
        secrets = registry_secrets(registry)
        if secrets and not rec.settings.read_secrets:
            return replace(
                topic,
                message=(
                    f"{topic.message}; the schema is not registered by the operator: it may not "
                    f"read Secrets (--read-secrets false), and the registry's are in "
                    f"{_secrets_named(secrets)}; register it under {subject} "
                    "yourself (the sidecars look its id up, and say here if they cannot)"
                ),
            )
        reached = await registry_of(rec.kube, spec.namespace, registry)
        found = (
            reached
            if isinstance(reached, RegistryProblem)
            else await register_schema(reached, subject, SCHEMA)
        )
        if isinstance(found, RegistryProblem):
            hint = registry_what_to_check(found.reason, registry)
            state = logging_state(found)
            if hint:
                state = replace(state, message=f"{state.message}; {hint}")
            if state.reason != _previous_logging_reason(serving):
                kopf.event(
                    _ref(serving), type="Warning", reason=state.reason, message=state.message
                )
            return state
        schema_id = rec.kafka.schemas[at] = found.schema_id
    return replace(
        topic,
        message=f"{topic.message}, framed with schema id {schema_id} of {subject} at "
        f"{registry.url}",
    )


async def _topic_state(
    rec: Reconciler, serving: Mapping[str, Any], spec: ServingSpec, check_kafka: bool
) -> LoggingState:
    key = (spec.namespace, spec.name)
    rec.kafka.users.pop(key, None)  # until the topic is found again
    unseen = rec.kafka.unseen.pop(key, None)  # until the operator fails to reach Kafka again
    if not spec.logging_requested(rec.settings):
        return LoggingState(True, "LoggingOff", "the inference log is off")
    if refused := spec.topic_refusal(rec.settings):  # never checked nor created
        return LoggingState(False, TOPIC_REFUSED, refused)
    servers = spec.bootstrap_servers(rec.settings)
    if not servers:
        return LoggingState(
            False,
            "NoBootstrapServers",
            "neither spec.logging.kafka.bootstrapServers nor the operator's "
            "--kafka-bootstrap-servers names the brokers",
        )
    topic, kafka = spec.topic, spec.logging.kafka
    asked = TopicSettings(kafka.partitions, kafka.replication_factor)
    if known := rec.kafka.topics.get((servers, topic)):
        rec.kafka.users[key] = (servers, topic)
        return topic_state(topic, known.found, asked)
    if not check_kafka:  # children's events keep what the last check found
        if unseen is not None:  # the operator's own failure, not the pods' word
            rec.kafka.unseen[key] = unseen
            return unseen
        previous = _previous_logging(serving)
        if previous and previous["reason"] in POD_REASONS:  # the pods' word, not the topic's
            return LoggingState(True, TOPIC_READY, f"records go to the topic {topic}")
        if previous:
            return LoggingState(
                previous["status"] == "True", previous["reason"], previous["message"]
            )
        return LoggingState(False, "Checking", "the topic has not been checked yet")
    security_spec = spec.kafka_security(rec.settings)
    unread = admin_secrets(security_spec)
    if unread and not rec.settings.read_secrets:
        # Said once, not retried: nothing changes until the operator may read them. The
        # sidecars read the Secrets as mounted files, and their trouble shows here instead.
        return LoggingState(
            True,
            TOPIC_UNCHECKED,
            (
                f"the topic {topic} is not checked or created: the operator may not read Secrets "
                f"(--read-secrets false, the chart's rbac.readSecrets), and the topic admin's "
                f"credentials are in {_secrets_named(unread)} ({FIELD}); create the topic "
                "yourself. The sidecars use the Secrets as mounted: a failure of theirs shows here"
            ),
        )
    try:
        security, credentials = await admin_security(rec.kube, spec.namespace, security_spec)
    except (MissingCredentials, KubeError) as exc:
        words = exc.message if isinstance(exc, KubeError) else str(exc)
        outcome = TopicOutcome(LoggingState(False, "KafkaCredentialsMissing", words))
    else:
        outcome = await rec.topics.ensure(
            servers, topic, kafka.partitions, kafka.replication_factor, security, credentials
        )
    state = outcome.state
    if outcome.found is not None:
        rec.kafka.topics[(servers, topic)] = KnownTopic(outcome.found, credentials)
        rec.kafka.users[key] = (servers, topic)
    if outcome.created:
        kopf.event(
            _ref(serving),
            type="Normal",
            reason="TopicCreated",
            message=f"Created Kafka topic {topic}",
        )
    elif not state.ready and state.reason not in (
        _previous_logging_reason(serving),
        unseen.reason if unseen else None,
    ):
        # Once per change, not once per retry: the condition keeps saying it meanwhile (or
        # says that the pods deliver, while the operator's failure stays the same).
        kopf.event(_ref(serving), type="Warning", reason=state.reason, message=state.message)
    if state.reason in _OPERATOR_UNSEEN:
        rec.kafka.unseen[key] = state
    return state


def _logging_with_pods(
    rec: Reconciler, spec: ServingSpec, state: LoggingState, pods: Iterable[Mapping[str, Any]]
) -> LoggingState:
    """LoggingReady with the pods' word (logging_from_pods): of a topic found, or of one the
    operator could not check because it cannot reach Kafka itself, where the pods may."""
    unseen = (spec.namespace, spec.name) in rec.kafka.unseen
    if (state.ready or unseen) and spec.logging_on(rec.settings):
        return logging_from_pods(state, pods, operator_unseen=unseen)
    return state


def _previous_logging(serving: Mapping[str, Any]) -> dict[str, Any] | None:
    for cond in (serving.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "LoggingReady":
            return dict(cond)
    return None


def _previous_logging_reason(serving: Mapping[str, Any]) -> str | None:
    return (_previous_logging(serving) or {}).get("reason")


def _tell_refusal(
    rec: Reconciler,
    serving: Mapping[str, Any],
    key: tuple[str, str],
    condition: str,
    reason: str,
    refused: str | None,
) -> None:
    """A Warning Event when the operator starts refusing a part of the spec (policy), or
    refuses it for another reason; once, though the watch cache may still show the status
    before our last write. `refused`: why, or None while nothing is refused."""
    told = rec.memory.told.setdefault(key, _condition_reasons(serving))
    if reason not in told:  # first look since the start: what the stored status says
        stored = (serving.get("status") or {}).get("conditions") or []
        said = [
            c.get("message", "")
            for c in stored
            if (c.get("type"), c.get("reason")) == (condition, reason)
        ]
        told[reason] = said[0] if said else ""
    if refused and told[reason] != refused:
        kopf.event(_ref(serving), type="Warning", reason=reason, message=refused)
    told[reason] = refused or ""
