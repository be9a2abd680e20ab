"""What the serving's pods say of the model: their reports turned into status, pure functions.

Each sidecar writes a report on its own Pod (annotation `modelserving.io/model`, through
pods/status): whether TF Serving answers, each version's state as TF Serving reports it (with
its error when a load failed), how many requests each version answered in the last minute,
and whether the auth configuration is usable. Here the pods' reports become
`status.versions` (per version: weight asked, the worst pod's state, the share it really
served) and two conditions, ModelReady and AuthReady, from the worst pod. Ready is held False
by what stops a ready pod from serving as asked (a version with a weight that its routing
names and that is not AVAILABLE, TF Serving not answering, an unusable auth configuration);
when the Deployment already says not Ready, the pods' reason replaces its "Unavailable", since
it says why. A pod that lists none of the spec's versions is an old pod of a roll: it serves
the old version until it goes, and is judged by that.

A serving that lists versions moves its weights in a file the kubelet brings to the pods within
about a minute, and each sidecar reports the weights it applies: while a ready pod applies
another split than the spec's, Progressing is True with SplitPending, saying how many apply the
new one and what the others still apply (status.traffic and versions[].weight say what is
asked). A report without weights (a sidecar older than them) says nothing of the split: its pod
is counted as not knowing, never as behind, so it cannot hold SplitPending forever.

A TF Serving that has not answered yet since its pod started (the report's server state
`starting`: it opens its ports only once it has loaded the model) is ModelLoading, told by a
Normal Event; ServerUnavailable, a Warning, is for one that stopped answering or never answered
within the serving's startup allowance (`down`), or whose container exited before it ever
answered (the pod's container status says so: a model too big for the memory limit is
OOMKilled while it loads, again and again, long before the allowance passes).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelserving import api
from modelserving_operator.spec import ModelSpec
from modelserving_operator.status.conditions import ROLLOUT_COMPLETE, Condition

AVAILABLE = "AVAILABLE"
UNKNOWN = "UNKNOWN"  # the sidecar's word for a version TF Serving does not report
# TF Serving's version states, best first; a state outside this list ranks as UNKNOWN.
_STATE_RANK = {
    state: rank
    for rank, state in enumerate(("AVAILABLE", "LOADING", "START", "UNLOADING", "END", "UNKNOWN"))
}
_OK_CODES = ("", "OK")

# Reasons, worst first: the first that holds is the one a condition says.
MODEL_LOAD_FAILED = "ModelLoadFailed"
SERVER_UNAVAILABLE = "ServerUnavailable"
AUTH_CONFIG_INVALID = "AuthConfigInvalid"
MODEL_LOADING = "ModelLoading"
PROBLEMS = (MODEL_LOAD_FAILED, SERVER_UNAVAILABLE, AUTH_CONFIG_INVALID, MODEL_LOADING)
# Reasons that warn in an Event; the others are told as Normal ones.
WARNINGS = (MODEL_LOAD_FAILED, SERVER_UNAVAILABLE, AUTH_CONFIG_INVALID)
ALL_AVAILABLE = "AllVersionsAvailable"
AUTH_READY = "AuthConfigReady"
AWAITING_REPORT = "AwaitingReport"
SPLIT_PENDING = "SplitPending"  # Progressing's, while a ready pod applies other weights
# Ready reasons of the Deployment that the pods' word may explain better.
_EXPLAINABLE = ("Unavailable", "Creating")
_MESSAGE_LIMIT = 1024  # of TF Serving's error in a condition: a path, a status, not a trace


@dataclass(frozen=True)
class VersionReport:
    """One version as one pod's TF Serving reports it."""

    state: str
    error_code: str = ""
    error_message: str = ""
    served: int = 0

    @property
    def failed(self) -> bool:
        return self.error_code not in _OK_CODES

    @property
    def rank(self) -> int:
        """How bad: a failed load is worst, then TF Serving's states from UNKNOWN to AVAILABLE."""
        if self.failed:
            return len(_STATE_RANK)
        return _STATE_RANK.get(self.state, _STATE_RANK["UNKNOWN"])


@dataclass(frozen=True)
class PodReport:
    """One pod's report, as its sidecar wrote it."""

    pod: str
    ready: bool  # the pod's Ready condition: it takes requests
    server_reachable: bool = True
    server_starting: bool = False  # not answered yet since the pod started, within the allowance
    server_exited: str = ""  # how TF Serving's container last ended, when it was restarted
    server_error: str = ""
    versions: Mapping[int, VersionReport] = field(default_factory=dict)
    auth_ready: bool = True
    auth_error: str = ""
    # The weight of each version in the routing its sidecar applies; None: it does not say.
    weights: Mapping[int, int] | None = None


@dataclass(frozen=True)
class Problem:
    """What keeps a pod from serving as asked, worded for a condition."""

    reason: str
    message: str

    @property
    def rank(self) -> int:
        return PROBLEMS.index(self.reason)


@dataclass(frozen=True)
class ModelStatus:
    """The pods' reports, summed up for the serving's status."""

    versions: list[dict[str, Any]]  # status.versions
    model_ready: Condition
    auth_ready: Condition
    # What holds Ready False among the ready pods; what explains a Ready the Deployment
    # already says is False, among all pods. None: nothing.
    blocking: Problem | None
    explaining: Problem | None
    # While a ready pod applies another split than the spec's: how far the new one has got.
    split_pending: str = ""


def parse_reports(pods: Iterable[Mapping[str, Any]]) -> list[PodReport]:
    """The reports of the pods' index entries ({name, ready, modelReport: JSON or None}); a pod
    without one (not started, or a sidecar that does not publish it) or with one that is not
    the contract's JSON is left out."""
    reports = []
    for pod in pods:
        try:
            raw = json.loads(pod.get("modelReport") or "null")
            if isinstance(raw, dict):
                report = _report(str(pod.get("name", "?")), bool(pod.get("ready")), raw)
                exited = pod.get("tfservingExited")
                if exited:
                    report = dataclasses.replace(report, server_exited=str(exited))
                reports.append(report)
        except (ValueError, TypeError, AttributeError, KeyError):
            continue
    return reports


def _report(pod: str, ready: bool, raw: Mapping[str, Any]) -> PodReport:
    server, auth = raw.get("server") or {}, raw.get("auth") or {}
    versions = {
        int(v["version"]): VersionReport(
            state=str(v.get("state") or "UNKNOWN"),
            error_code=str(v.get("errorCode") or ""),
            error_message=str(v.get("errorMessage") or ""),
            served=int(v.get("served") or 0),
        )
        for v in raw.get("versions") or []
    }
    # A sidecar that knows no state (older than the state) says only reachable: down when not.
    state = server.get("state")
    reachable = state == "up" if state else bool(server.get("reachable", True))
    weights = raw.get("weights")
    return PodReport(
        pod=pod,
        ready=ready,
        server_reachable=reachable,
        server_starting=state == "starting",
        server_error=str(server.get("error") or ""),
        versions=versions,
        auth_ready=bool(auth.get("ready", True)),
        auth_error=str(auth.get("error") or ""),
        weights={int(n): int(w) for n, w in weights.items()} if isinstance(weights, dict) else None,
    )


def tfserving_exited(pod_status: Mapping[str, Any] | None) -> str:
    """How the pod's TF Serving container last ended, when the kubelet has restarted it
    ("OOMKilled, exit code 137"); empty when it never ended."""
    for container in (pod_status or {}).get("containerStatuses") or []:
        if container.get("name") != api.TFSERVING_CONTAINER or not container.get("restartCount"):
            continue
        ended = (container.get("lastState") or {}).get("terminated") or {}
        return f"{ended.get('reason') or 'Error'}, exit code {ended.get('exitCode', '?')}"
    return ""


def _cut(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _problems(report: PodReport, versions: Iterable[int], base_path: str) -> list[Problem]:
    """Every problem one pod reports for the given versions, worst first."""
    found = []
    if report.server_starting and report.server_exited:
        message = (
            f"TF Serving in {report.pod} exited before it answered once ({report.server_exited}): "
            f"kubectl logs {report.pod} -c {api.TFSERVING_CONTAINER} --previous says why"
        )
        found.append(Problem(SERVER_UNAVAILABLE, _cut(message)))
    elif report.server_starting:
        why = report.server_error or "no answer yet"
        message = (
            f"TF Serving is starting and loading the model in {report.pod} (it opens its "
            f"ports once the model is loaded; until then: {why})"
        )
        found.append(Problem(MODEL_LOADING, _cut(message)))
    elif not report.server_reachable:
        why = report.server_error or "no answer"
        message = f"TF Serving does not answer in {report.pod}: {why}"
        found.append(Problem(SERVER_UNAVAILABLE, _cut(message)))
    if not report.auth_ready:
        why = report.auth_error or "unusable"
        found.append(Problem(AUTH_CONFIG_INVALID, f"{report.pod}: {why}"))
    for number in versions:
        seen = report.versions.get(number)
        if seen is None:
            if report.server_reachable:
                message = f"{report.pod} has no word of version {number} yet"
                found.append(Problem(MODEL_LOADING, message))
        elif seen.failed:
            found.append(
                Problem(
                    MODEL_LOAD_FAILED,
                    _cut(
                        f"version {number} could not be loaded in {report.pod}: "
                        f"{seen.error_code}: {seen.error_message}"
                    ),
                )
            )
        elif seen.state == UNKNOWN and not seen.error_message and report.server_reachable:
            # TF Serving lists the versions it found files of: one it does not list is not
            # under the base path (yet); it is loaded once it is, as TF Serving keeps looking.
            message = (
                f"TF Serving in {report.pod} reports no version {number}: it loads it once "
                f"{base_path.rstrip('/')}/{number} holds a SavedModel"
            )
            found.append(Problem(MODEL_LOADING, _cut(message)))
        elif seen.state != AVAILABLE and report.server_reachable:
            detail = f": {seen.error_message}" if seen.error_message else ""
            message = f"version {number} is {seen.state} in {report.pod}{detail}"
            found.append(Problem(MODEL_LOADING, _cut(message)))
    return sorted(found, key=lambda problem: problem.rank)


def _worst(problems: Iterable[Problem]) -> Problem | None:
    return min(problems, key=lambda problem: problem.rank, default=None)


def _version_entries(model: ModelSpec, reports: list[PodReport]) -> list[dict[str, Any]]:
    total = sum(v.served for r in reports for v in r.versions.values())
    asked = [(v.number, v.weight, v.labels, v.role) for v in model.versions]
    if model.shadow is not None:
        asked.append((model.shadow.number, 0, model.shadow.labels, "shadow"))
    entries = []
    for number, weight, labels, role in asked:
        seen = [r.versions[number] for r in reports if number in r.versions]
        worst = max(seen, key=lambda v: v.rank, default=None)
        served = sum(v.served for v in seen)
        entry: dict[str, Any] = {
            "version": number,
            "weight": weight,
            "labels": list(labels),
            "role": role,
            "state": worst.state if worst else "",
        }
        if total:  # absent, not null, when nothing was served: a merge patch drops nulls
            # Whole percents: a steady split reads the same from one report to the next, so
            # the status is not rewritten for every request.
            entry["servedPercent"] = round(100 * served / total)
        if worst and worst.error_message:
            entry["message"] = _cut(worst.error_message)
        entries.append(entry)
    return entries


def _judged_versions(
    report: PodReport, asked: Iterable[int], spec_versions: Iterable[int]
) -> list[int]:
    """The versions of `asked` one pod is judged by. A pod that lists none of the spec's
    versions is of an earlier spec (an old pod of a roll, which serves the old version until
    it goes): it is judged by the versions it serves, those it lists AVAILABLE, or else by
    all it lists. Another pod is judged by `asked`: for Ready, the weighted versions its
    routing names (the sidecar lists each), as one whose routing file the kubelet has not
    updated yet serves the split it has."""
    if not any(number in report.versions for number in spec_versions):
        serving = [n for n, v in sorted(report.versions.items()) if v.state == AVAILABLE]
        return serving or sorted(report.versions)
    return list(asked)


def _split_text(weights: Iterable[tuple[int, int]]) -> str:
    return " ".join(f"{number}:{weight}" for number, weight in weights)


def _share(weights: Mapping[int, int]) -> dict[int, int]:
    """The split a routing makes: a version of weight 0 gets nothing, listed or not."""
    return {number: weight for number, weight in weights.items() if weight > 0}


def split_pending(model: ModelSpec, reports: Iterable[PodReport]) -> str:
    """How far the spec's weights have reached the ready pods, while one of them applies
    another split; empty once all that say apply it. Only a serving that lists versions moves
    weights in place: one of a single version rolls its pods for a new one (RollingOut)."""
    if not model.listed:
        return ""
    asked = [(v.number, v.weight) for v in model.versions]
    split = _share(dict(asked))
    ready = [r for r in reports if r.ready]
    behind = [r for r in ready if r.weights is not None and _share(r.weights) != split]
    if not behind:
        return ""
    knowing = sum(1 for r in ready if r.weights is not None)
    older = sorted({_split_text(sorted(r.weights.items())) for r in behind if r.weights})
    message = (
        f"{knowing - len(behind)} of {knowing} ready pods apply the new weights "
        f"{_split_text(asked)}; {len(behind)} still {'applies' if len(behind) == 1 else 'apply'} "
        f"{' or '.join(older)} (the kubelet brings the routing file to the pods within about "
        "a minute)"
    )
    if silent := len(ready) - knowing:
        message += f"; {silent} {'does' if silent == 1 else 'do'} not report the weights it applies"
        message += " (a sidecar older than that report)"
    return message


def model_status(model: ModelSpec, pods: Iterable[Mapping[str, Any]]) -> ModelStatus:
    """The serving's status.versions, ModelReady and AuthReady from its pods' reports, and
    what, if anything, holds Ready False."""
    reports = parse_reports(pods)
    every_version = model.loaded_versions
    # Versions that take a share of the requests: while one is not AVAILABLE in a ready pod,
    # that pod does not serve as asked. Weight 0 and the shadow only show in ModelReady.
    weighted = [v.number for v in model.versions if v.weight > 0]

    def problems(report: PodReport, asked: list[int]) -> list[Problem]:
        return _problems(report, _judged_versions(report, asked, every_version), model.base_path)

    def routed(report: PodReport) -> list[int]:
        return [number for number in weighted if number in report.versions]

    everything = [p for r in reports for p in problems(r, list(every_version))]
    gating = [p for r in reports for p in problems(r, routed(r))]
    model_problem = _worst(p for p in everything if p.reason != AUTH_CONFIG_INVALID)
    auth_problem = _worst(p for p in everything if p.reason == AUTH_CONFIG_INVALID)
    if not reports:
        waiting = "no pod has reported what TF Serving says of the model yet"
        model_ready = Condition("ModelReady", False, AWAITING_REPORT, waiting)
        auth_ready = Condition("AuthReady", False, AWAITING_REPORT, waiting)
    else:
        model_ready = (
            Condition("ModelReady", False, model_problem.reason, model_problem.message)
            if model_problem
            else Condition(
                "ModelReady",
                True,
                ALL_AVAILABLE,
                f"versions {', '.join(map(str, every_version))} are AVAILABLE in every pod",
            )
        )
        auth_ready = (
            Condition("AuthReady", False, auth_problem.reason, auth_problem.message)
            if auth_problem
            else Condition("AuthReady", True, AUTH_READY, "the auth configuration is usable")
        )
    blocking = _worst(p for r in reports if r.ready for p in problems(r, routed(r)))
    return ModelStatus(
        versions=_version_entries(model, reports),
        model_ready=model_ready,
        auth_ready=auth_ready,
        blocking=blocking,
        explaining=_worst(gating),
        split_pending=split_pending(model, reports),
    )


def ready_with_pods(ready: Condition, status: ModelStatus) -> Condition:
    """The Ready condition with the pods' word: False with the pods' reason while a ready pod
    cannot serve as asked; when the Deployment already says not Ready, the pods' reason
    (ModelLoadFailed, ...) in place of its Unavailable, since it says why."""
    if ready.status and status.blocking is not None:
        return Condition("Ready", False, status.blocking.reason, status.blocking.message)
    if not ready.status and ready.reason in _EXPLAINABLE and status.explaining is not None:
        problem = status.explaining
        return Condition("Ready", False, problem.reason, f"{ready.message}: {problem.message}")
    return ready


def progressing_with_pods(progressing: Condition, status: ModelStatus) -> Condition:
    """The Progressing condition with the pods' word: a rollout that is complete still
    progresses (SplitPending) while a ready pod applies other weights than the spec's. A
    rollout in progress or a refused write says more, and is kept."""
    if progressing.reason == ROLLOUT_COMPLETE and status.split_pending:
        return Condition("Progressing", True, SPLIT_PENDING, status.split_pending)
    return progressing


def event_for(previous: str | None, condition: Condition) -> tuple[str, str] | None:
    """The Event to post (type, reason) when a condition's reason changed; None when it did
    not, or when it only went from nothing to waiting for the pods' first report."""
    if condition.reason == previous:
        return None
    if previous is None and condition.reason == AWAITING_REPORT:
        return None
    if condition.reason == AWAITING_REPORT:
        return None
    return ("Warning" if condition.reason in WARNINGS else "Normal", condition.reason)
