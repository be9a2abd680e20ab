"""What TF Serving says of this pod's model: every few seconds the sidecar asks
`GET /v1/models/<name>` through its own upstream connections and keeps the answer as one
immutable snapshot (`ModelState`): whether TF Serving answered at all (and why not), and each
version's state and TF Serving's error code and message. The split reads which versions are
AVAILABLE from it, readiness too, and the pod's model report all of it.

TF Serving opens its REST and gRPC ports only once it has loaded its models (its ServerCore
loads them before the servers start), so every new pod's TF Serving refuses connections for a
while, longer the bigger the model. Not answering is therefore told two ways (`ServerState`):
`starting` while TF Serving has not answered once since the sidecar started and the startup
allowance (upstream.startupAllowanceSeconds) has not passed, `down` once it answered and
stopped, or the allowance passed without an answer.

Parsing TF Serving's answer and telling starting from down are pure functions
(`parse_model_status`, `server_state`); the watcher is the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from modelserving.api import TFSERVING_STARTUP_ALLOWANCE_SECONDS
from modelserving_sidecar.errors import SidecarError
from modelserving_sidecar.upstream.proxy import Upstream

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often TF Serving is asked (one small GET on a kept-alive connection)
ANSWER_TIMEOUT_SECONDS = 5.0  # a status GET not answered by then: TF Serving counts as unreachable
# The oldest the latest look gets while the watcher runs: a reader that accepts this age asks
# TF Serving itself only before the first look is made (it then waits for that look).
WATCHED_AGE_SECONDS = POLL_SECONDS + ANSWER_TIMEOUT_SECONDS

AVAILABLE = "AVAILABLE"
UNKNOWN = "UNKNOWN"  # a version TF Serving does not report (not in TF Serving's own states)
# TF Serving's version states (ModelVersionStatus.State), as its REST API spells them.
STATES = frozenset({"START", "LOADING", AVAILABLE, "UNLOADING", "END"})

# TF Serving's REST answers a failed status request with only an HTTP code and {"error": ...}:
# the canonical code it mapped to that HTTP code (tensorflow's error codes, by name).
_CODES_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServerState(enum.StrEnum):
    """Whether TF Serving answers, as the pod's model report says it."""

    UP = "up"  # it answered the latest look (an error answer too: it is serving)
    STARTING = "starting"  # not answered once since the sidecar started, within the allowance
    DOWN = "down"  # answered before and stopped, or not once within the startup allowance


def server_state(
    answered_now: bool, answered_before: bool, waited_seconds: float, allowance_seconds: float
) -> ServerState:
    """Starting, up or down, from the latest look, whether TF Serving ever answered this
    sidecar, and how long ago the sidecar started."""
    if answered_now:
        return ServerState.UP
    if not answered_before and waited_seconds <= allowance_seconds:
        return ServerState.STARTING
    return ServerState.DOWN


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version as TF Serving reports it (`model_version_status[]`)."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END; UNKNOWN when TF Serving says none
    error_code: str = "OK"  # status.error_code: OK, NOT_FOUND, ...
    error_message: str = ""  # status.error_message


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """TF Serving's answer to `GET /v1/models/<name>`, parsed: the versions it reports, or the
    error it answered instead (`error`, with `error_code` derived from the HTTP code)."""

    versions: tuple[VersionStatus, ...] = ()
    error: str = ""
    error_code: str = ""


@dataclass(frozen=True, slots=True)
class ModelState:
    """One look at TF Serving: up, starting or down (and why not up), and what it said of the
    model."""

    server: ServerState
    error: str  # why TF Serving is not reachable, in words a user can act on
    status: ModelStatus
    checked_at: float  # time.monotonic() of the look; 0 before the first
    available: frozenset[int]  # the versions in state AVAILABLE

    @property
    def reachable(self) -> bool:
        return self.server is ServerState.UP

    @classmethod
    def of(cls, status: ModelStatus, checked_at: float) -> ModelState:
        available = frozenset(v.version for v in status.versions if v.state == AVAILABLE)
        return cls(ServerState.UP, "", status, checked_at, available)

    @classmethod
    def unreachable(
        cls, error: str, checked_at: float, server: ServerState = ServerState.DOWN
    ) -> ModelState:
        return cls(server, error, ModelStatus(), checked_at, frozenset())


NOT_YET_ASKED = ModelState(
    ServerState.STARTING, "TF Serving has not been asked yet", ModelStatus(), 0.0, frozenset()
)


def parse_model_status(http_status: int, body: bytes) -> ModelStatus:
    """TF Serving's answer to a model status GET: its versions (newest first, as it lists them)
    with their state and error, or the error it answered with.

    A 200 whose body is not TF Serving's status is an error too, said as such, never a crash.
    """
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if http_status != 200:
        message = document.get("error") if isinstance(document, dict) else None
        if not isinstance(message, str):
            message = f"TF Serving answered HTTP {http_status}"
        return ModelStatus(error=message, error_code=_CODES_OF_HTTP.get(http_status, "UNKNOWN"))
    entries = document.get("model_version_status") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return ModelStatus(
            error="TF Serving's model status has no model_version_status", error_code="UNKNOWN"
        )
    versions = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            number = int(entry["version"])  # an int64, as a JSON string
        except (KeyError, TypeError, ValueError):
            continue
        state = entry.get("state")
        status: dict[str, Any] = entry["status"] if isinstance(entry.get("status"), dict) else {}
        code, message = status.get("error_code", "OK"), status.get("error_message", "")
        versions.append(
            VersionStatus(
                number,
                state if state in STATES else UNKNOWN,
                code if isinstance(code, str) else str(code),
                message if isinstance(message, str) else "",
            )
        )
    return ModelStatus(tuple(versions))


class ModelStateWatcher:
    """Keeps `state`, the latest look at TF Serving, fresh: polled every POLL_SECONDS, and at
    once when `refresh` is awaited. Listeners are called on the loop when a look changes which
    versions are AVAILABLE.

    The startup allowance counts from the watcher's start, which is the sidecar's: the two
    containers of a pod start together, and a sidecar restarted beside a TF Serving that
    runs finds it answering at once."""

    def __init__(
        self,
        upstream: Upstream,
        model_name: str,
        poll_seconds: float = POLL_SECONDS,
        startup_allowance_seconds: float = TFSERVING_STARTUP_ALLOWANCE_SECONDS,
    ):
        self._upstream = upstream
        self._path = f"/v1/models/{model_name}"
        self._poll_seconds = poll_seconds
        self._allowance = startup_allowance_seconds
        self._started = time.monotonic()
        self._answered = False  # TF Serving answered once since the sidecar started
        self.state = NOT_YET_ASKED
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[ModelState], None]] = []

    def on_change(self, listener: Callable[[ModelState], None]) -> None:
        self._listeners.append(listener)

    async def look(self) -> ModelState:
        """Ask TF Serving now (looks asked for together share one question)."""
        asked = time.monotonic()
        async with self._lock:
            if self.state.checked_at >= asked:
                return self.state
            try:
                answer = await self._upstream.forward(
                    "GET", self._path, timeout=ANSWER_TIMEOUT_SECONDS
                )
            except SidecarError as exc:
                now = time.monotonic()
                server = server_state(False, self._answered, now - self._started, self._allowance)
                error = exc.message
                if server is ServerState.DOWN and not self._answered:
                    error += (
                        f"; it has not answered once in the {self._allowance:g} s startup "
                        "allowance since the pod started (TF Serving opens its ports once it "
                        "has loaded the model: its log says what holds it)"
                    )
                state = ModelState.unreachable(error, now, server)
            else:
                self._answered = True
                state = ModelState.of(
                    parse_model_status(answer.status, answer.body), time.monotonic()
                )
            previous, self.state = self.state, state
        if state.available != previous.available or state.server != previous.server:
            for listener in self._listeners:
                listener(state)
        return state

    async def fresh(self, max_age: float) -> ModelState:
        """The latest look, asked again when older than `max_age` seconds."""
        if time.monotonic() - self.state.checked_at <= max_age:
            return self.state
        return await self.look()

    async def run(self) -> None:
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive anything one look can do
                log.exception("asking TF Serving for the model's status failed")
            await asyncio.sleep(self._poll_seconds)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        upstream: Upstream,
        model_name: str,
        poll_seconds: float = POLL_SECONDS,
        startup_allowance_seconds: float = TFSERVING_STARTUP_ALLOWANCE_SECONDS,
    ) -> AsyncIterator[ModelStateWatcher]:
        watcher = cls(upstream, model_name, poll_seconds, startup_allowance_seconds)
        task = asyncio.create_task(watcher.run(), name="model-state")
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
