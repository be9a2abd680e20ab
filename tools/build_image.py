#!/usr/bin/env python3
"""Build the project's container image without a Docker engine.

The Dockerfile at the repo root is built with `buildah bud --isolation chroot`
against a base made from Debian's packages (mmdebstrap, imported with podman)
and with wheels built on the host, since a build has no route to the package
registries. The base and the dependencies' wheels are cached outside the repo,
keyed by what they are made of, so a warm build takes seconds. The tag follows
the project's version in pyproject.toml. Standard library only; installs
buildah, podman and mmdebstrap from Debian when they are missing (as root).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MODELSERVING_CACHE", Path.home() / ".cache" / "modelserving"))
IMAGE_CACHE = CACHE / "image"
IMAGE_NAME = "localhost/modelserving"

# The base: Debian's Python 3.11, which matches the python:3.11-slim default of
# the Dockerfile and the host's wheels (cp311, glibc 2.36).
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, man pages and translations only make the image bigger.
BASE_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
)
BASE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
)
TOOLS = {"buildah": "buildah", "podman": "podman", "mmdebstrap": "mmdebstrap"}
# What the source tree of the wheel is made of (pyproject.toml's tool.hatch.build).
SOURCE_PATHS = ("pyproject.toml", "README.md", "modelserving", "operator", "sidecar")


class BuildError(RuntimeError):
    """A step of the build failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], cwd: Path | None = None, quiet: bool = True) -> str:
    """Run a command; on failure raise BuildError with the tail of its output."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-40:])
        raise BuildError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{tail}")
    return proc.stdout or ""


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def project_version() -> str:
    """The one place for the version: pyproject.toml."""
    return project()["version"]


def image_tag(version: str | None = None) -> str:
    return f"{IMAGE_NAME}:{version or project_version()}"


def short_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BuildError(
            f"missing {', '.join(missing)}: install them from Debian "
            f"(apt-get install -y {' '.join(missing)}) or run this as root to let it do so"
        )
    log(f"installing {' '.join(missing)} from Debian")
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run([*env_cmd, "apt-get", "update"])
    run([*env_cmd, "apt-get", "install", "-y", "--no-install-recommends", *missing])


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


# --------------------------------------------------------------------------- base


def base_image() -> str:
    """A Python base from Debian's packages, built once and cached by what it holds."""
    key = short_hash(DEBIAN_SUITE, BASE_PACKAGES, BASE_EXCLUDES, BASE_ENV)
    name = f"localhost/modelserving-base:{DEBIAN_SUITE}-{key}"
    if image_exists(name):
        return name
    tarball = IMAGE_CACHE / f"base-{DEBIAN_SUITE}-{key}.tar"
    if not tarball.exists():
        log(f"making the base from Debian {DEBIAN_SUITE} packages (mmdebstrap, about 20 s)")
        IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".tar.partial")
        excludes = [f"--dpkgopt=path-exclude={path}" for path in BASE_EXCLUDES]
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                *excludes,
                "--format=tar",
                DEBIAN_SUITE,
                str(partial),
            ]
        )
        partial.rename(tarball)
    changes = [arg for env in BASE_ENV for arg in ("--change", f"ENV {env}")]
    run(["podman", "import", *changes, str(tarball), name])
    return name


# --------------------------------------------------------------------------- wheels


def dependency_wheels() -> Path:
    """The dependencies' wheels, built on the host, cached by the dependency list."""
    deps = sorted(project()["dependencies"])
    key = short_hash(deps, sys.implementation.cache_tag, platform.machine())
    out = IMAGE_CACHE / f"wheels-{key}"
    if out.exists():
        return out
    log("building the dependencies' wheels on the host (pip wheel)")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial), *deps])
    partial.rename(out)
    return out


def project_wheel(dest: Path) -> None:
    """The project's own wheel, from a clean copy of the working tree.

    A copy, so that nothing but these paths (no build/ folder, no cache) can reach it.
    """
    with tempfile.TemporaryDirectory(prefix="modelserving-src-") as tmp:
        src = Path(tmp)
        for rel in SOURCE_PATHS:
            path = REPO / rel
            if path.is_dir():
                shutil.copytree(
                    path,
                    src / rel,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(path, src / rel)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(dest),
                str(src),
            ]
        )


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    size_bytes: int
    seconds: float
    oci_archive: Path | None


def image_id(name: str) -> str | None:
    proc = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def image_size(name: str) -> int:
    data = json.loads(run(["podman", "image", "inspect", name]))
    return int(data[0]["Size"])


def build(tag: str | None = None, oci_archive: Path | None = None) -> BuiltImage:
    started = time.monotonic()
    ensure_tools()
    version = project_version()
    tag = tag or image_tag(version)
    base = base_image()
    previous = image_id(tag)
    with tempfile.TemporaryDirectory(prefix="modelserving-image-") as tmp:
        context = Path(tmp)
        wheels = context / "wheels"
        shutil.copytree(dependency_wheels(), wheels)
        project_wheel(wheels)
        shutil.copy2(REPO / "Dockerfile", context / "Dockerfile")
        shutil.copy2(REPO / ".dockerignore", context / ".dockerignore")
        log(f"building {tag} on {base} (buildah bud)")
        run(
            [
                "buildah",
                "bud",
                "--isolation",
                "chroot",
                "--pull-never",
                "--build-arg",
                f"BASE_IMAGE={base}",
                "--build-arg",
                f"VERSION={version}",
                "--tag",
                tag,
                str(context),
            ]
        )
    # The image this build replaced would linger untagged, build after build.
    if previous and previous != image_id(tag):
        subprocess.run(["podman", "rmi", previous], capture_output=True)
    if oci_archive:
        oci_archive.parent.mkdir(parents=True, exist_ok=True)
        oci_archive.unlink(missing_ok=True)
        run(["podman", "save", "--format", "oci-archive", "--output", str(oci_archive), tag])
    return BuiltImage(
        tag=tag,
        base=base,
        size_bytes=image_size(tag),
        seconds=time.monotonic() - started,
        oci_archive=oci_archive,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tag", help=f"image name and tag (default: {IMAGE_NAME}:<version in pyproject.toml>)"
    )
    parser.add_argument("--oci-archive", type=Path, help="also save the image to this OCI archive")
    parser.add_argument(
        "--print-tag", action="store_true", help="print the default tag and exit without building"
    )
    args = parser.parse_args(argv)
    if args.print_tag:
        print(image_tag())
        return 0
    try:
        built = build(args.tag, args.oci_archive)
    except BuildError as exc:
        print(f"image build failed: {exc}", file=sys.stderr)
        return 1
    log(
        f"built {built.tag}: {built.size_bytes / 1e6:.0f} MB in {built.seconds:.0f} s"
        + (f", saved to {built.oci_archive}" if built.oci_archive else "")
    )
    print(built.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
