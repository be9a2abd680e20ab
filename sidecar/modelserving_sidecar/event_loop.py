"""The event loop the sidecar and the activator run on: uvloop's when installed (a faster one:
their request paths are mostly the loop's own work, parsing and writing sockets), else
asyncio's own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio.Runner's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
