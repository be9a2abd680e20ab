"""Every import in the tree resolves for a static resolver that runs no code: pyright
(basedpyright's wheel), given only pyproject's tool.pyright (the source roots), as editors
with Pylance or pyright read the project. An import only a finder or a link tree could
satisfy fails here.

Checking the whole tree takes pyright about 20 s; what this test needs of it is the import
resolution alone, so every import statement of the tree (found with `ast`, function-level
ones included) is written into one file that pyright checks with the project's settings, a
few seconds. An import of a module beside the importing file (a script's own folder, which
pyright also resolves) is checked here directly, as pyright would."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

# An import that resolved only through the old finder: the resolver must report it.
CANARY = "modelserving.sidecar.app"


def tracked_python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    # protoc's output imports its siblings as its generator writes them, checked by its own test.
    return [REPO / f for f in listed if "_pb2" not in f]


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(module, line) for every absolute import in the file; relative ones are refused."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert node.level == 0, f"{path}:{node.lineno}: a relative import"
            found.append((node.module or "", node.lineno))
    return found


def test_every_import_resolves_without_running_code(tmp_path: Path) -> None:
    lines = []
    for path in tracked_python_files():
        for module, line in imported_modules(path):
            if (path.parent / f"{module.split('.')[0]}.py").is_file():
                continue  # a module beside the file, as a script imports it
            lines.append(f"import {module}  # {path.relative_to(REPO)}:{line}")
    assert len(lines) > 1000  # the whole tree was read
    probe = tmp_path / "every_import.py"
    probe.write_text("\n".join([*lines, f"import {CANARY}  # canary", ""]))
    basedpyright = Path(sys.executable).parent / "basedpyright"
    run = subprocess.run(
        [str(basedpyright), "--outputjson", "-p", str(REPO / "pyproject.toml"), str(probe)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(run.stdout)
    unresolved = [
        lines[d["range"]["start"]["line"]] if d["range"]["start"]["line"] < len(lines) else CANARY
        for d in report["generalDiagnostics"]
        if d.get("rule") == "reportMissingImports"
    ]
    assert unresolved == [CANARY]
