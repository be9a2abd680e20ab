"""Answered predictions as the request path hands them to the inference log (`Exchange`), for
the tests of the log: one with every field set, and runs that vary each field with the index."""

from __future__ import annotations

import json
import time
from typing import Any

from modelserving_sidecar.log.exchange import Exchange

# A run's statuses: half successes, and the errors a caller meets (bad request, no model, down).
STATUSES = (200, 200, 200, 400, 404, 503)


def an_exchange(**changes: Any) -> Exchange:
    """One answered prediction with every field set; `changes` overrides any of them."""
    values: dict[str, Any] = {
        "request_id": "01J0REQ",
        "received_ms": 1_700_000_000_123,
        "status": 200,
        "request_body": b'{"instances": [[1.0, 2.0]]}',
        "response_body": b'{"predictions": [[0.9]]}',
        "model_version": None,
        "caller": "team-a",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    values.update(changes)
    return Exchange(**values)


def varied_exchange(
    i: int,
    *,
    request_id: str | None = None,
    received_ms: int | None = None,
    body_bytes: int = 0,
) -> Exchange:
    """The i-th of a run whose fields vary with i: the status (STATUSES in turn), the version
    (3, or none), the caller (one of four teams, or none), the traceparent (every fourth), and a
    request body with a non-ASCII string, of about `body_bytes` when given."""
    padding = [i] * (body_bytes // 3)
    return Exchange(
        request_id=request_id or f"req-{i:06d}",
        received_ms=int(time.time() * 1000) if received_ms is None else received_ms,
        status=STATUSES[i % len(STATUSES)],
        request_body=json.dumps(
            {"instances": [[i, i / 7, "é", *padding]]}, ensure_ascii=False
        ).encode(),
        response_body=json.dumps({"predictions": [[i / 3]]}).encode(),
        model_version=None if i % 2 else 3,
        caller=f"team-{i % 4}" if i % 5 else None,
        traceparent=None if i % 4 else f"00-{i:032x}-{i:016x}-01",
    )
