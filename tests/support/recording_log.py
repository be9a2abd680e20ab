"""An inference log that keeps what the request path hands it, for tests of the request path."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from modelserving_sidecar.log.exchange import Exchange


class RecordingLog:
    """An inference log that keeps what it is handed."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.full = False
        self.failed: str | None = None  # what `failure` answers
        self.keeps = True  # what `spooled` answers (durability spooled)
        self.written: asyncio.Event | None = None  # set: `spooled` waits for it
        self.awaited = asyncio.Event()  # set once the request path awaits `spooled`

    def accepting(self) -> bool:
        return not self.full

    def failure(self) -> str | None:
        return self.failed

    def submit(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    async def spooled(self, exchange: Exchange) -> bool:
        self.awaited.set()
        if self.written is not None:
            await self.written.wait()
        if self.keeps:
            self.exchanges.append(exchange)
        return self.keeps

    def factory(self):
        @asynccontextmanager
        async def open_log(config, registry):
            yield self

        return open_log
