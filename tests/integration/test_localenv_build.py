"""`localenv.py build` with every part in the cache, as on any run after the first: it says so in
one line, without building anything (a first build's progress is in
tests/unit/test_localenv_build_progress.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO
from tests.support.environment import localenv


def test_a_build_with_every_part_cached_says_so(local_env):
    out = subprocess.run(
        [sys.executable, str(REPO / "localenv" / "localenv.py"), "build"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"[localenv] builds ready in {localenv.CACHE}: all 10 parts cached\n"
    assert localenv.cached_steps() == frozenset(localenv.BUILD_STEPS)
