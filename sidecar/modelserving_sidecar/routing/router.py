"""The sidecar's current split table (`Router.table`): made of the routing file and of the
versions TF Serving reports AVAILABLE, and made again whole when either changes.

The routing file (`routing.yaml`, a key of the serving's sidecar ConfigMap, mounted so that the
kubelet replaces it in place) is read at start and looked at every few seconds; a change is
taken without a restart, a bad file is logged and the table in use kept. Without the file (a
sidecar run by hand) all traffic goes to the config's `model.version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import yaml

from modelserving_sidecar.config import ConfigError
from modelserving_sidecar.model.state import ModelState
from modelserving_sidecar.routing.split import Routing, RoutingError, SplitTable, parse_routing

log = logging.getLogger(__name__)

RELOAD_SECONDS = 2.0  # how often the routing file is looked at (one small read)
ROUTING_FILE_NAME = "routing.yaml"  # the ConfigMap's key, beside sidecar.yaml


def read_routing_file(path: Path) -> bytes | None:
    """The file's bytes, None when there is none (blocking: run it in a thread)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def parse_routing_text(text: bytes, path: Path) -> Routing:
    """The routing of the file's text; RoutingError naming the file and the bad entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingError(f"{path} is not valid YAML: {exc}") from None
    try:
        return parse_routing(data)
    except RoutingError as exc:
        raise RoutingError(f"{path}: {exc}") from None


class Router:
    """Holds the split table the request path reads (`table`, one attribute read per request)."""

    def __init__(self, model_name: str, routing: Routing, path: Path | None = None) -> None:
        self.model_name = model_name
        self.path = path
        self._routing = routing
        self._available: frozenset[int] = frozenset()
        self._text: bytes | None = None
        self.table = SplitTable.build(model_name, routing, self._available)
        self._listeners: list[Callable[[SplitTable], None]] = []

    def on_change(self, listener: Callable[[SplitTable], None]) -> None:
        """Call `listener` on the loop with each new table (a routing or AVAILABLE set changed)."""
        self._listeners.append(listener)

    @property
    def routing(self) -> Routing:
        return self._routing

    def _rebuild(self) -> None:
        self.table = table = SplitTable.build(self.model_name, self._routing, self._available)
        for listener in self._listeners:
            listener(table)

    def model_state_changed(self, state: ModelState) -> None:
        if state.available != self._available:
            self._available = state.available
            self._rebuild()

    def take(self, routing: Routing) -> None:
        """A new routing: the table is made again, whole."""
        if routing != self._routing:
            log.info("routing: %s", _describe(routing))
            self._routing = routing
            self._rebuild()

    def reload(self, text: bytes | None) -> None:
        """The routing file's text as just read; a file gone or unchanged changes nothing."""
        if text is None or text == self._text or self.path is None:
            return
        self._text = text
        try:
            routing = parse_routing_text(text, self.path)
        except RoutingError as exc:
            log.error("routing: %s; the routing in use is kept", exc)
            return
        self.take(routing)

    async def _watch(self, every: float) -> None:
        assert self.path is not None
        while True:
            await asyncio.sleep(every)
            try:
                self.reload(await asyncio.to_thread(read_routing_file, self.path))
            except Exception:
                log.exception("routing: reading %s failed; the routing in use is kept", self.path)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, model_name: str, version: int, path: Path | None, every: float = RELOAD_SECONDS
    ) -> AsyncIterator[Router]:
        """The router for the app's lifetime: the file read now (a bad one fails the start with
        ConfigError), then looked at every `every` seconds."""
        text = await asyncio.to_thread(read_routing_file, path) if path is not None else None
        routing = Routing.one_version(version)
        if text is not None and path is not None:
            try:
                routing = parse_routing_text(text, path)
            except RoutingError as exc:
                raise ConfigError(f"routing: {exc}") from None
        router = cls(model_name, routing, path)
        router._text = text
        log.info(
            "routing (%s): %s", path if text is not None else "model.version", _describe(routing)
        )
        if path is None:
            yield router
            return
        watcher = asyncio.create_task(router._watch(every), name="routing-file")
        try:
            yield router
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _describe(routing: Routing) -> str:
    parts = [
        f"version {v.version} {v.weight}%" + (f" {','.join(v.labels)}" if v.labels else "")
        for v in routing.versions
    ]
    if routing.shadow is not None:
        parts.append(f"shadow {routing.shadow.version} {routing.shadow.percent}%")
    parts.append(
        f"sticky by {routing.sticky_by.value}"
        + (f" {routing.sticky_header}" if routing.sticky_header else "")
    )
    return ", ".join(parts)
