"""The package is plain: operator/ and sidecar/ are modelserving.operator and
modelserving.sidecar through pyproject's package-dir, with no symlink in the tree,
and a wheel of it imports from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import modelserving.operator.render
import modelserving.sidecar.app
from tests.support import REPO


def test_the_tree_holds_no_symlink() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    links = [line.split("\t", 1)[1] for line in staged.splitlines() if line.startswith("120000")]
    assert links == []


def test_the_top_level_folders_are_the_subpackages() -> None:
    # The editable install links to the sources: what is imported is the checkout's files.
    assert Path(modelserving.operator.render.__file__).resolve().parent == REPO / "operator"
    assert Path(modelserving.sidecar.app.__file__).resolve().parent == REPO / "sidecar"


def test_a_wheel_imports_from_outside_the_checkout(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of: setuptools leaves a build/ folder
    # behind, and a stale one in the checkout would put deleted modules into later wheels.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "modelserving", "operator", "sidecar"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("modelserving-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"modelserving/operator/render.py", "modelserving/sidecar/app.py"} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The wheel's copy comes first on the path, ahead of this checkout's editable install.
    imported = subprocess.run(
        [sys.executable, "-c",
         "import modelserving.sidecar.app, modelserving.operator.handlers as h; print(h.__file__)"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(site)
