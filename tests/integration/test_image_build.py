"""The project's container image, built for real with buildah (tools/build_image.py)
and checked by running commands inside it: it runs as a non-root uid, both entry
points answer, no compiler or package installer is left in it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import REPO
from tests.support.scripts import load_script

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

BUILD_SCRIPT = REPO / "tools" / "build_image.py"
RUN_AS = "10001"
# What would let a running container build or install code.
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "pip", "pip3")


build_image = load_script("tools/build_image.py", "build_image")


@pytest.fixture(scope="module")
def image() -> str:
    """Build the image once for this module (seconds when the caches are warm)."""
    proc = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, f"`make image` failed:\n{proc.stdout[-4000:]}"
    print(proc.stdout.strip().splitlines()[-2])  # the size and the time, in the test log
    return build_image.image_tag()


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """A working container of the image, for `buildah run`."""
    name = subprocess.run(
        ["buildah", "from", "--pull-never", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True)


def run_in(container: str, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
    user_args = ["--user", user] if user else []
    return subprocess.run(
        ["buildah", "run", "--isolation", "chroot", *user_args, container, "--", *cmd],
        capture_output=True,
        text=True,
    )


def inspect(image: str) -> dict:
    out = subprocess.run(
        ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)[0]


def test_image_is_tagged_with_the_project_version(image):
    version = build_image.project_version()
    assert image.endswith(f":{version}")
    config = inspect(image)
    assert config["Labels"]["org.opencontainers.image.version"] == version
    assert config["Config"]["Entrypoint"] == ["modelserving"]


def test_image_runs_as_a_non_root_uid_by_default(image, container):
    assert inspect(image)["Config"]["User"] == f"{RUN_AS}:{RUN_AS}"
    out = run_in(container, "id", "-u")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == RUN_AS


@pytest.mark.parametrize("command", ["operator", "sidecar"])
def test_both_entry_points_answer_help_as_the_non_root_user(container, command):
    out = run_in(container, "modelserving", command, "--help", user=RUN_AS)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"usage: modelserving {command}")


def test_the_project_is_importable_without_writing_to_the_root_filesystem(container):
    # Read-only root friendly: every module imports with bytecode already compiled,
    # and the non-root user could not write next to the code anyway.
    out = run_in(
        container,
        "python",
        "-c",
        "import os, modelserving_operator.main, modelserving_sidecar.main, modelserving;"
        "print(os.access(os.path.dirname(modelserving.__file__), os.W_OK))",
        user=RUN_AS,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_compiler_or_installer_in_the_image(container):
    out = run_in(
        container,
        "python",
        "-c",
        f"import shutil; print(' '.join(t for t in {BUILD_TOOLS!r} if shutil.which(t)))",
        user=RUN_AS,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"build tools found in the image: {out.stdout.strip()}"
    pip = run_in(container, "python", "-m", "pip", "--version", user=RUN_AS)
    assert pip.returncode != 0, "pip is still installed in the image's virtualenv"


def test_image_size_is_reported_and_bounded(image):
    size_mb = inspect(image)["Size"] / 1e6
    print(f"image {image}: {size_mb:.0f} MB")
    # The kubernetes client alone is about 125 MB; this catches a build stage leaking in.
    assert size_mb < 450, f"the image grew to {size_mb:.0f} MB"
