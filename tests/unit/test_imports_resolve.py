"""Every import in the tree resolves for a static resolver that runs no code: pyright
(basedpyright's wheel), given only pyproject's tool.pyright (the source roots), as editors
with Pylance or pyright read the project. An import only a finder or a link tree could
satisfy fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_every_import_resolves_without_running_code() -> None:
    basedpyright = Path(sys.executable).parent / "basedpyright"
    run = subprocess.run(
        [str(basedpyright), "--outputjson", "--pythonpath", sys.executable],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(run.stdout)
    unresolved = [
        f"{Path(d['file']).relative_to(REPO)}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d.get("rule") == "reportMissingImports"
    ]
    assert unresolved == []
    # The resolver read the whole tree: the three roots' packages, the tests and the tools.
    assert report["summary"]["filesAnalyzed"] > 200
