"""Errors the sidecar answers itself, in TF Serving's words: status code and `{"error": "..."}`."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

JSON = "application/json"


class SidecarError(Exception):
    """An answer the sidecar makes itself instead of TF Serving's: a code and a message."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_body(message: str) -> bytes:
    """TF Serving's error body."""
    return json.dumps({"error": message}).encode()


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, body=error_body(message), content_type=JSON, headers=headers)
