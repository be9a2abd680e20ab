"""Reading spans back from the real Jaeger (the `jaeger` fixture) through its query API: a
trace's spans, waited for with a deadline, and what a span says of itself."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.waiting import wait_for_async


async def jaeger_trace(
    http: aiohttp.ClientSession, jaeger: Any, trace_id: str
) -> list[dict] | None:
    """The spans Jaeger's query API holds for a trace, or None when it has none."""
    async with http.get(f"{jaeger.query_url}/api/traces/{trace_id}") as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        (found,) = (await resp.json())["data"]
        return list(found["spans"])


async def all_spans_of(
    http: aiohttp.ClientSession, jaeger: Any, trace_id: str, count: int
) -> list[dict]:
    """The trace's spans, once Jaeger holds `count` of them."""
    spans: list[dict] = []

    async def all_there() -> bool:
        spans[:] = await jaeger_trace(http, jaeger, trace_id) or []
        return len(spans) >= count

    await wait_for_async(all_there, timeout=30, what=f"{count} spans of trace {trace_id}")
    return spans


def parent_of(span: dict) -> str | None:
    """The id of the span's parent, or None for a trace's root."""
    parents = [ref["spanID"] for ref in span["references"] if ref["refType"] == "CHILD_OF"]
    return parents[0] if parents else None


def tags(span: dict) -> dict[str, Any]:
    """The span's attributes, by key."""
    return {tag["key"]: tag["value"] for tag in span["tags"]}
