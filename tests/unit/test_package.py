"""The package is plain: three source roots (pyproject's tool.hatch.build), each holding
regular packages whose import names match their folders, read alike by the editable install,
the wheel, pytest, mypy, ruff and pyright; the standard library's `operator` never shadowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import modelserving_operator.render.manifests
import modelserving_sidecar.app
from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ROOTS = PYPROJECT["tool"]["hatch"]["build"]["dev-mode-dirs"]


def test_every_tool_is_given_the_same_source_roots() -> None:
    tool = PYPROJECT["tool"]
    assert ROOTS == [".", "operator", "sidecar"]
    assert tool["pytest"]["ini_options"]["pythonpath"] == ROOTS
    assert tool["mypy"]["mypy_path"] == ROOTS
    assert tool["ruff"]["src"] == ROOTS
    assert tool["pyright"]["extraPaths"] == ROOTS
    packages = tool["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert [Path(p).name for p in packages] == tool["mypy"]["packages"]


def test_the_editable_install_is_a_plain_path_file() -> None:
    # No import finder: a .pth of the roots, which editors and code tools read as they are.
    pth = Path(sysconfig.get_paths()["purelib"]) / "_modelserving.pth"
    assert pth.read_text().split() == [str((REPO / root).resolve()) for root in ROOTS]
    assert not [f for f in sys.meta_path if "editable" in type(f).__module__]


def test_the_tree_holds_no_symlink() -> None:
    staged = subprocess.run(
        ["git", "ls-files", "--stage"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    links = [line.split("\t", 1)[1] for line in staged.splitlines() if line.startswith("120000")]
    assert links == []


def test_the_imported_modules_are_the_checkouts_files() -> None:
    render = Path(modelserving_operator.render.manifests.__file__).resolve()
    assert render == REPO / "operator" / "modelserving_operator" / "render" / "manifests.py"
    app = Path(modelserving_sidecar.app.__file__).resolve()
    assert app == REPO / "sidecar" / "modelserving_sidecar" / "app.py"


def test_the_roots_are_no_packages_so_the_standard_library_operator_is_never_shadowed() -> None:
    # `python -m` from the repository's root puts the root first on sys.path, where a regular
    # package named operator would stand in for the standard library's module (runpy imports it).
    assert not (REPO / "operator" / "__init__.py").exists()
    assert not (REPO / "sidecar" / "__init__.py").exists()
    for cwd in (REPO, REPO / "operator"):
        where = subprocess.run(
            [sys.executable, "-m", "modelserving.cli", "--help"],
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        assert where.returncode == 0, where.stderr
        imported = subprocess.run(
            [sys.executable, "-c", "import operator, sys; print(operator.__file__)"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        )
        assert Path(imported.stdout.strip()).parent == Path(os.__file__).parent


def test_a_wheel_imports_from_outside_the_checkout(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of, so nothing of the checkout's is used.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "modelserving", "operator", "sidecar"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(
            REPO / name,
            source / name,
            **(
                {"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}
            ),
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(source),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "wheels").glob("modelserving-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "modelserving/api.py",
        "modelserving/py.typed",
        "modelserving/tfserving/serving_apis.proto",
        "modelserving_operator/render/manifests.py",
        "modelserving_sidecar/app.py",
        "modelserving_sidecar/log/spool/segments.py",
    } <= names
    assert not [n for n in names if n.startswith(("operator/", "sidecar/", "tests/"))]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The wheel's copy comes first on the path, ahead of this checkout's editable install.
    imported = subprocess.run(
        [
            sys.executable,
            "-c",
            "import modelserving_sidecar.app, modelserving_operator.handlers as h; "
            "print(h.__file__)",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(site)
