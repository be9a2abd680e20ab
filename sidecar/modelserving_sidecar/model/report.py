"""The pod's model report: what TF Serving says of the model (whether it answers, each version's
state and load error), how many requests each version answered here in the last minute, and
whether the auth configuration is usable, and the weights of the routing file this sidecar has
loaded, published on the sidecar's own Pod (annotation `modelserving.io/model`, see pod_status)
for the operator to turn into the serving's status:

    {"server": {"reachable": true, "state": "up", "error": ""},
     "versions": [{"version": 3, "state": "AVAILABLE", "errorCode": "OK", "errorMessage": "",
                   "served": 1234}],
     "auth": {"ready": true, "error": ""},
     "weights": {"3": 90, "4": 10}}

`server.state` is up, starting (TF Serving has not answered once since the pod started, within
its startup allowance: it loads the model before it opens its ports) or down (it stopped
answering, or never answered within the allowance); `reachable` is state up, for readers that
know no state. `versions` lists every version TF Serving reports and every version the routing
names that it does not (state UNKNOWN); when TF Serving answers the status request with an
error (no version of the model loaded yet or ever), the routed versions carry that error.
`weights` is each weighted version of the routing in use with its weight (JSON keys are
strings): the kubelet brings a changed routing file to the pods within about a minute, and until
then the operator tells the split as pending (Progressing SplitPending). The shadow's percent
and the sticky key are not in it: the report stays small, written on every pod. The
report is a pure function of its parts (`model_report`); `ServedWindow` turns running totals
into the last minute's counts.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from modelserving.api import MODEL_REPORT_ANNOTATION
from modelserving_sidecar.auth.authenticator import AuthHealth
from modelserving_sidecar.model.state import UNKNOWN, ModelState
from modelserving_sidecar.pod_status import CHECK_SECONDS, PodStatusPublisher, publishing
from modelserving_sidecar.routing.split import Routing

ANNOTATION = MODEL_REPORT_ANNOTATION  # the operator reads it from the same constant
SERVED_WINDOW_SECONDS = 60.0


def routed_versions(routing: Routing) -> list[int]:
    """The versions the routing names: weighted ones and the shadow."""
    named = [v.version for v in routing.versions]
    if routing.shadow is not None:
        named.append(routing.shadow.version)
    return named


def model_report(
    state: ModelState, routing: Routing, served: Mapping[int, int], auth: AuthHealth
) -> dict[str, Any]:
    """The report of one look at TF Serving, the routing in use, the last minute's answers by
    version (shadow copies not counted) and the auth configuration's health."""
    status = state.status
    versions: dict[int, dict[str, Any]] = {}
    for reported in status.versions:
        versions[reported.version] = {
            "version": reported.version,
            "state": reported.state,
            "errorCode": reported.error_code,
            "errorMessage": reported.error_message,
        }
    for version in routed_versions(routing):
        if version not in versions:
            # TF Serving's error for the whole model (404: no version loaded yet or ever) is
            # each routed version's; while it does not answer, nothing is known of them.
            versions[version] = {
                "version": version,
                "state": UNKNOWN,
                "errorCode": status.error_code,
                "errorMessage": status.error,
            }
    return {
        "server": {"reachable": state.reachable, "state": str(state.server), "error": state.error},
        "versions": [{**versions[v], "served": served.get(v, 0)} for v in sorted(versions)],
        "auth": {"ready": auth.ready, "error": auth.error},
        "weights": applied_weights(routing),
    }


def applied_weights(routing: Routing) -> dict[str, int]:
    """The weight of each weighted version of the routing, keyed by its number as text."""
    return {str(v.version): v.weight for v in routing.versions}


def significant(report: dict[str, Any]) -> object:
    """What of a report is written at once when it changes: all but the served counts."""
    return (
        report["server"],
        [{k: v for k, v in version.items() if k != "served"} for version in report["versions"]],
        report["auth"],
        report["weights"],
    )


class ServedWindow:
    """Requests answered per version in the last `seconds`, from running totals sampled at each
    report: the totals now less the newest sample at least that old (zero at start)."""

    def __init__(self, seconds: float = SERVED_WINDOW_SECONDS, now: float | None = None) -> None:
        self.seconds = seconds
        start = time.monotonic() if now is None else now
        self._samples: collections.deque[tuple[float, Mapping[int, int]]] = collections.deque(
            [(start, {})]
        )

    def served(self, totals: Mapping[int, int], now: float | None = None) -> dict[int, int]:
        now = time.monotonic() if now is None else now
        samples = self._samples
        while len(samples) > 1 and samples[1][0] <= now - self.seconds:
            samples.popleft()
        base = samples[0][1]
        samples.append((now, dict(totals)))
        return {v: count - base.get(v, 0) for v, count in totals.items()}


@contextlib.asynccontextmanager
async def publishing_model_report(
    model_state: Callable[[], Awaitable[ModelState]],
    routing: Callable[[], Routing],
    served_totals: Callable[[], Mapping[int, int]],
    auth: Callable[[], AuthHealth],
    kubeconfig: str = "",
    check_seconds: float = CHECK_SECONDS,
) -> AsyncIterator[PodStatusPublisher | None]:
    """Publish the report on the pod while the block runs: written when it changed, and when
    only the served counts did, at most every REFRESH_SECONDS.

    `model_state` gives TF Serving's answer, awaited: the first report waits for the first look
    at TF Serving rather than say it unreachable because it was not asked yet (the operator
    would tell ServerUnavailable, a Warning, for every pod that starts)."""
    window = ServedWindow()

    async def make() -> tuple[dict[str, Any], object]:
        state = await model_state()
        report = model_report(state, routing(), window.served(served_totals()), auth())
        return report, significant(report)

    async with publishing("model report", ANNOTATION, make, kubeconfig, check_seconds) as pub:
        yield pub
