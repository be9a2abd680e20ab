"""Part 4: the operator at scale (filled in below once the operator can run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(env: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    return {"notes": ["not run yet"]}
