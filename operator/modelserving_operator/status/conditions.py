"""A serving's status from what the operator observed: pure functions, no I/O.

The Deployment's status becomes Ready/Progressing/Degraded, the topic check
becomes LoggingReady; a condition keeps its lastTransitionTime while its
status stays the same, so an unchanged world yields an identical status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class LoggingState:
    """What the operator knows of the serving's inference log."""

    ready: bool
    reason: str
    message: str


# ApplyFailure's reasons: the API server refused a child's write; a child's name is taken.
APPLY_FAILED = "ApplyFailed"
CONFLICT = "Conflict"
# Progressing's reason once every replica runs the current spec.
ROLLOUT_COMPLETE = "RolloutComplete"


@dataclass(frozen=True)
class ApplyFailure:
    """Why the children are not as the spec wants them: the API server refused a write
    (APPLY_FAILED), or an object that is not the serving's holds a child's name (CONFLICT)."""

    reason: str
    message: str


SCALED_TO_ZERO = "ScaledToZero"
WAKES_ON_REQUEST = (
    "no pod runs: the serving's first request wakes it, held by the activator until a pod is ready"
)
NO_ACTIVATOR = (
    "no pod runs, and no activator answers for the serving (the operator's --activator-service, "
    "the chart's activator.enabled): its requests are refused until it is scaled up"
)


def deployment_conditions(
    deployment: Mapping[str, Any] | None,
    not_applied: ApplyFailure | None = None,
    rolling_to: str = "",
    wakes: bool | None = None,
) -> list[Condition]:
    """Ready, Progressing and Degraded from the Deployment (None: not there yet) and from why
    the children could not be applied, if they could not. `rolling_to` names what a roll
    brings ("version 4"), for Progressing.

    Ready says whether the pods serve: a roll keeps it, as the old pods serve until new ones
    are available (maxUnavailable 0), and so does a change the Deployment's controller has not
    taken up yet (its status.observedGeneration behind its generation): its counts are the
    pods that serve now. A refused write (ApplyFailed: a 429, a timeout, an admission denial)
    leaves the pods serving as they did: it is told in Progressing and Degraded, and Ready is
    the pods'. A Conflict holds Ready False: the serving's names are another's.

    At zero replicas, a serving that may go to zero (`wakes` not None) is Ready when the
    activator answers for it (`wakes`): its first request is held and wakes it."""
    if not_applied and (deployment is None or not_applied.reason != APPLY_FAILED):
        reason, message = not_applied.reason, not_applied.message
        return [
            Condition("Ready", False, reason, message),
            Condition("Progressing", False, reason, message),
            Condition("Degraded", True, reason, message),
        ]
    if deployment is None:
        message = "the serving's Deployment does not exist yet"
        return [
            Condition("Ready", False, "Creating", message),
            Condition("Progressing", True, "Creating", message),
            Condition("Degraded", False, "Creating", message),
        ]
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    desired = spec.get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    available = status.get("availableReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    seen = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    deployment_conds = {c.get("type"): c for c in status.get("conditions") or []}
    stuck = deployment_conds.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"
    failure = deployment_conds.get("ReplicaFailure", {})
    rolled_out = seen and updated >= desired and total == updated and available >= desired
    to = f" to {rolling_to}" if rolling_to else ""

    if desired == 0 and wakes:
        ready_cond = Condition("Ready", True, SCALED_TO_ZERO, WAKES_ON_REQUEST)
    elif desired == 0 and wakes is False:
        ready_cond = Condition("Ready", False, SCALED_TO_ZERO, NO_ACTIVATOR)
    elif desired == 0:
        ready_cond = Condition("Ready", False, SCALED_TO_ZERO, "the serving has 0 replicas")
    elif rolled_out:
        ready_cond = Condition(
            "Ready", True, "Available", f"{available} of {desired} replicas serve the model"
        )
    elif available >= desired:
        ready_cond = Condition(
            "Ready", True, "RollingOut", f"{available} replicas serve; a rollout is in progress"
        )
    else:
        ready_cond = Condition(
            "Ready", False, "Unavailable", f"{ready} of {desired} replicas are ready"
        )

    if rolled_out:
        progressing = Condition(
            "Progressing", False, ROLLOUT_COMPLETE, "every replica runs the current spec"
        )
    elif not seen:
        progressing = Condition(
            "Progressing",
            True,
            "RollingOut",
            f"the Deployment's controller has not taken up its change{to} yet",
        )
    else:
        progressing = Condition(
            "Progressing", True, "RollingOut", f"{updated} of {desired} replicas updated{to}"
        )

    if not_applied:
        reason, message = not_applied.reason, not_applied.message
        return [
            ready_cond,
            Condition("Progressing", False, reason, message),
            Condition("Degraded", True, reason, message),
        ]
    if stuck:
        degraded = Condition(
            "Degraded",
            True,
            "ProgressDeadlineExceeded",
            deployment_conds["Progressing"].get("message", "the rollout is stuck"),
        )
    elif failure.get("status") == "True":
        degraded = Condition(
            "Degraded", True, "ReplicaFailure", failure.get("message", "pods cannot be created")
        )
    else:
        degraded = Condition("Degraded", False, "AsExpected", "no fault seen")
    return [ready_cond, progressing, degraded]


# Reasons of LoggingReady that come from the pods' log-status annotations; a broker refusing
# the producer's credentials or TLS first: it is the cause, and what the user fixes.
POD_REASONS = (
    "KafkaAuthenticationFailed",
    "KafkaTLSFailed",
    # The sidecar's lookup of the records' schema id (modelserving_sidecar.log.framing): no
    # record is sent without it.
    "SchemaRegistryUnreachable",
    "SchemaRegistryTLSFailed",
    "SchemaRegistryAuthenticationFailed",
    "SchemaRegistryForbidden",
    "SchemaRegistryCredentialsMissing",
    "SchemaNotRegistered",
    "SchemaRegistryFailed",
    "SpoolFull",
    "KafkaUnreachable",
    "SpoolFilling",
)
_POD_STATE_ORDER = {reason: i for i, reason in enumerate(POD_REASONS)}  # worst first
_POD_WORDS = {
    "KafkaAuthenticationFailed": "Kafka refuses the producer's credentials",
    "KafkaTLSFailed": "the TLS connection to Kafka fails",
    "SchemaRegistryUnreachable": "the schema registry cannot be reached",
    "SchemaRegistryTLSFailed": "the TLS connection to the schema registry fails",
    "SchemaRegistryAuthenticationFailed": "the schema registry refuses the credentials",
    "SchemaRegistryForbidden": "the schema registry does not allow the lookup",
    "SchemaRegistryCredentialsMissing": "the schema registry's files cannot be read",
    "SchemaNotRegistered": "the schema is not registered under the subject",
    "SchemaRegistryFailed": "the schema registry does not give the schema id",
    "SpoolFull": "the spool is full",
    "KafkaUnreachable": "Kafka is unreachable",
    "SpoolFilling": "the spool is filling",
}


# LoggingReady's reason while the operator's own connection to Kafka fails (its topic check
# says why) but the pods report that their producers reach the brokers.
OPERATOR_KAFKA_UNREACHABLE = "OperatorKafkaUnreachable"
_FLOWING = "Flowing"  # the sidecar's summary state of a log that delivers (sidecar/log_status)


def logging_from_pods(
    topic_state: LoggingState,
    pods: Iterable[Mapping[str, Any]],
    *,
    operator_unseen: bool = False,
) -> LoggingState:
    """LoggingReady from the topic check and the pods' log-status summaries (index entries of
    {name, logStatus: JSON or None}): the worst pod's state wins, with the age of the oldest
    record any pod still holds.

    `operator_unseen`: the topic check failed because the operator itself could not reach
    Kafka (topic_state says why: unreachable, its TLS or credentials). The pods' producers
    connect from elsewhere (another NetworkPolicy, their own mounts), so while pods report that
    they deliver (Flowing, Kafka reachable) and none is in trouble, records do reach the topic:
    LoggingReady is True, saying what the operator cannot do. Whatever event reconciles the
    serving, the answer is the same: it no longer flips between the operator's view and the
    pods'."""
    troubled, delivering = [], []
    for pod in pods:
        try:
            summary = json.loads(pod.get("logStatus") or "null")
        except ValueError:
            continue
        if not isinstance(summary, dict):
            continue
        if summary.get("state") in _POD_STATE_ORDER:
            troubled.append((pod.get("name", "?"), summary))
        elif summary.get("state") == _FLOWING and summary.get("kafkaReachable") is True:
            delivering.append(summary)
    if not troubled:
        if operator_unseen and delivering:
            return _delivering_unseen(topic_state, delivering)
        return topic_state
    troubled.sort(key=lambda item: _POD_STATE_ORDER[item[1]["state"]])
    reason = troubled[0][1]["state"]
    oldest = max(int(s.get("oldestRecordAgeSeconds") or 0) for _, s in troubled)
    waiting = sum(int(s.get("waitingRecords") or 0) for _, s in troubled)
    details = "; ".join(
        f"{name}: {_POD_WORDS[s['state']]}"
        + (f" ({said})" if (said := s.get("registryError") or s.get("kafkaError")) else "")
        + f", spool {s.get('spoolPercent', 0)}% full"
        for name, s in troubled
    )
    message = f"{waiting} records wait in the pods' spools, the oldest for {oldest} s ({details})"
    return LoggingState(False, reason, message)


def _delivering_unseen(topic_state: LoggingState, delivering: list[dict[str, Any]]) -> LoggingState:
    waiting = sum(int(s.get("waitingRecords") or 0) for s in delivering)
    pods = f"{len(delivering)} pod{'s' if len(delivering) != 1 else ''}"
    return LoggingState(
        True,
        OPERATOR_KAFKA_UNREACHABLE,
        (
            f"the pods deliver: {pods} report their producers reach the brokers ({waiting} "
            f"records waiting), but the operator cannot reach them itself, so it neither checks "
            f"nor creates the topic (its NetworkPolicy, its network or its credentials?): "
            f"{topic_state.reason}: {topic_state.message}"
        ),
    )


def logging_condition(state: LoggingState) -> Condition:
    return Condition("LoggingReady", state.ready, state.reason, state.message)


def merge_conditions(
    old: list[Mapping[str, Any]], new: list[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions to write: lastTransitionTime moves only when a status flips."""
    before = {c.get("type"): c for c in old or []}
    merged = []
    for cond in new:
        status = "True" if cond.status else "False"
        previous = before.get(cond.type) or {}
        changed = previous.get("status") != status
        merged.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return merged


def render_status(
    old_status: Mapping[str, Any],
    *,
    generation: int,
    model_id: int,
    model_name: str,
    endpoint: str,
    topic: str | None,
    deployment: Mapping[str, Any] | None,
    conditions: list[Condition],
    now: str,
    traffic: str = "",
    versions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole status subresource the operator owns."""
    dep_spec = (deployment or {}).get("spec") or {}
    dep_status = (deployment or {}).get("status") or {}
    desired = dep_spec.get("replicas", 0)
    ready = dep_status.get("readyReplicas", 0)
    status: dict[str, Any] = {
        "modelId": model_id,
        "modelName": model_name,
        "endpoint": endpoint,
        "observedGeneration": generation,
        "replicas": desired,
        "readyReplicas": ready,
        "updatedReplicas": dep_status.get("updatedReplicas", 0),
        "readyText": f"{ready}/{desired}",
        "traffic": traffic,
        "versions": versions or [],
        "conditions": merge_conditions(
            list(old_status.get("conditions") or []), conditions, generation, now
        ),
    }
    if topic:
        status["topic"] = topic
    return status


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change what the API server holds for the fields we own."""
    return any(old.get(key) != value for key, value in new.items()) or (
        "topic" in old and "topic" not in new
    )


# The fields that follow a rollout's progress, pod by pod; what the rest of the status says
# does not move with them.
_PROGRESS_FIELDS = ("replicas", "readyReplicas", "updatedReplicas", "readyText", "conditions")


def _condition_states(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration"))
        for c in status.get("conditions") or []
    ]


def progress_only(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether `new` differs from `old` only in how far a rollout has got: counts of replicas
    and the conditions' messages, with every condition's status and reason as they were. Such
    a write can wait a little and be folded into the next (a Deployment's status moves three
    or four times on the way to Ready); one that flips a condition cannot."""
    if _condition_states(old) != _condition_states(new):
        return False
    return not any(
        old.get(key) != value for key, value in new.items() if key not in _PROGRESS_FIELDS
    ) and not ("topic" in old and "topic" not in new)
