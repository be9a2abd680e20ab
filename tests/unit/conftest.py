"""Fixtures of the unit tests (which need no cluster and no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from modelserving_operator import reconcile


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The Events a reconcile posts (kopf.event), kept here instead of sent: a module of
    reconciles without an API server takes it for all its tests
    (`pytestmark = pytest.mark.usefixtures("events")`)."""
    posted: list[dict[str, Any]] = []
    monkeypatch.setattr(reconcile.kopf, "event", lambda _ref, **event: posted.append(event))
    return posted
