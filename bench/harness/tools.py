"""What the benchmark runs, installed or built by the benchmark itself and cached outside the
repo, keyed by version: nginx and wrk from Debian; vegeta, ghz (gRPC load) and KServe's agent
from the Go module proxy; the gRPC upstream of bench/baselines/grpc_upstream (keyed by its
source); the profiler and uvloop from PyPI into a folder of the benchmark's own (added to
PYTHONPATH only where a configuration asks for it, so the project's virtualenv stays as its
pyproject.toml makes it)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.baselines import BASELINES
from bench.harness.procs import BenchError, log

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"
KSERVE_VERSION = "v0.17.0"
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz"
GHZ_VERSION = "v0.121.0"
PY_SPY_VERSION = "0.4.3"
UVLOOP_VERSION = "0.23.0"
CACHE = Path(os.environ.get("MODELSERVING_CACHE", Path.home() / ".cache" / "modelserving"))
GO_ENV = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}


@dataclass(frozen=True)
class Tools:
    nginx: str
    wrk: str
    vegeta: str
    kserve_agent: str
    py_spy: str | None
    pylib: str | None  # uvloop for the configurations that compare event loops
    ghz: str = ""  # gRPC load generator ("": not built, the gRPC part is skipped)
    grpc_upstream: str = ""  # bench/baselines/grpc_upstream built


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def ensure_debian_tools() -> tuple[str, str]:
    """nginx and wrk, installed from Debian's packages when missing (the bench runs as root)."""
    if not (shutil.which("nginx") and shutil.which("wrk")):
        log("installing nginx and wrk from Debian's packages")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", "nginx", "wrk"], env=env)
    nginx, wrk = shutil.which("nginx"), shutil.which("wrk")
    if not nginx or not wrk:
        raise BenchError("nginx or wrk is still missing after apt-get install")
    return nginx, wrk


def vegeta_binary() -> Path:
    """Where `ensure_vegeta` puts vegeta (the comparisons use it there, built or not)."""
    return CACHE / f"vegeta-{VEGETA_VERSION}" / "bin" / "vegeta"


def ensure_vegeta() -> str:
    binary = vegeta_binary()
    out = binary.parent
    if not binary.exists():
        log(f"installing vegeta {VEGETA_VERSION} from the Go module proxy")
        out.mkdir(parents=True, exist_ok=True)
        _run(
            ["go", "install", "-ldflags", "-s -w", f"{VEGETA_MODULE}@{VEGETA_VERSION}"],
            CACHE,
            {**GO_ENV, "GOFLAGS": "", "GOBIN": str(out)},
        )
    return str(binary)


def ensure_ghz() -> str:
    """ghz, the gRPC load generator: reads our .proto files itself, saturates or holds a rate,
    and reports latency percentiles as JSON."""
    binary = CACHE / f"ghz-{GHZ_VERSION}" / "bin" / "ghz"
    if not binary.exists():
        log(f"installing ghz {GHZ_VERSION} from the Go module proxy")
        binary.parent.mkdir(parents=True, exist_ok=True)
        _run(
            ["go", "install", "-ldflags", "-s -w", f"{GHZ_MODULE}@{GHZ_VERSION}"],
            CACHE,
            {**GO_ENV, "GOFLAGS": "", "GOBIN": str(binary.parent)},
        )
    return str(binary)


def ensure_grpc_upstream() -> str:
    """bench/baselines/grpc_upstream built, cached by a hash of its source (go.mod pins grpc-go)."""
    source = BASELINES / "grpc_upstream"
    files = sorted(p for p in source.iterdir() if p.suffix in (".go", ".mod", ".sum"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files))
    root = CACHE / f"grpc-upstream-{digest.hexdigest()[:12]}"
    binary = root / "bin" / "grpc-upstream"
    if binary.exists():
        return str(binary)
    log("building the gRPC upstream (bench/baselines/grpc_upstream)")
    work = root / "src"
    work.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy(path, work / path.name)
    tmp = binary.with_name("grpc-upstream.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _run(["go", "build", "-ldflags", "-s -w", "-o", str(tmp), "."], work, GO_ENV)
    tmp.rename(binary)
    return str(binary)


def ensure_kserve_agent() -> str:
    """KServe's agent, built through bench/baselines/kserve_agent with kserve's own replace
    directives."""
    root = CACHE / f"kserve-agent-{KSERVE_VERSION}"
    binary = root / "bin" / "agent"
    if binary.exists():
        return str(binary)
    log(f"building KServe's agent {KSERVE_VERSION} (a few minutes with empty Go caches)")
    work = root / "src"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("go.mod", "tools.go"):
        shutil.copy(BASELINES / "kserve_agent" / name, work / name)
    info = _run(
        ["go", "mod", "download", "-json", f"github.com/kserve/kserve@{KSERVE_VERSION}"],
        work,
        GO_ENV,
    )
    gomod = Path(re.search(r'"GoMod":\s*"([^"]+)"', info).group(1)).read_text()  # type: ignore[union-attr]
    replaces = re.findall(r"^replace\s+(\S+\s+=>\s+\S+\s+\S+)\s*$", gomod, re.M)
    with (work / "go.mod").open("a") as f:
        f.write("".join(f"\nreplace {line}" for line in replaces) + "\n")
    _run(["go", "mod", "tidy"], work, GO_ENV)
    tmp = binary.with_name("agent.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _run(
        ["go", "build", "-ldflags", "-s -w", "-o", str(tmp), "github.com/kserve/kserve/cmd/agent"],
        work,
        GO_ENV,
    )
    tmp.rename(binary)
    return str(binary)


def ensure_python_extras() -> tuple[str | None, str | None]:
    """py-spy (the profiler) and uvloop (measured side by side), pip-installed into a cached
    folder of their own: (py-spy binary, folder for PYTHONPATH)."""
    pyver = f"py{sys.version_info.major}{sys.version_info.minor}"
    target = CACHE / f"bench-python-{pyver}-pyspy{PY_SPY_VERSION}-uvloop{UVLOOP_VERSION}"
    if not (target / ".complete").exists():
        log(f"installing py-spy {PY_SPY_VERSION} and uvloop {UVLOOP_VERSION} into {target}")
        try:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--target",
                    str(target),
                    f"py-spy=={PY_SPY_VERSION}",
                    f"uvloop=={UVLOOP_VERSION}",
                ]
            )
            (target / ".complete").touch()
        except BenchError as exc:
            log(f"py-spy and uvloop could not be installed, their parts are skipped: {exc}")
            return None, None
    py_spy = target / "bin" / "py-spy"
    return (str(py_spy) if py_spy.exists() else None), str(target)


def ensure_all() -> Tools:
    nginx, wrk = ensure_debian_tools()
    py_spy, pylib = ensure_python_extras()
    return Tools(
        nginx=nginx,
        wrk=wrk,
        vegeta=ensure_vegeta(),
        kserve_agent=ensure_kserve_agent(),
        py_spy=py_spy,
        pylib=pylib,
        ghz=ensure_ghz(),
        grpc_upstream=ensure_grpc_upstream(),
    )


def versions(tools: Tools) -> dict[str, str]:
    """What ran, for the report."""

    def first_line(cmd: list[str]) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return lines[0] if lines else ""

    import aiohttp

    return {
        "nginx": first_line([tools.nginx, "-v"]).removeprefix("nginx version: "),
        "wrk": first_line([tools.wrk, "-v"]).split(" [")[0],
        "vegeta": VEGETA_VERSION,
        "kserve agent": KSERVE_VERSION,
        "ghz": GHZ_VERSION,
        "grpc-go (gRPC upstream)": _grpc_go_version(),
        "go": first_line(["go", "version"]).removeprefix("go version "),
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
    }


def _grpc_go_version() -> str:
    """The grpc-go version bench/baselines/grpc_upstream's go.mod pins."""
    found = re.search(
        r"google\.golang\.org/grpc (v\S+)", (BASELINES / "grpc_upstream" / "go.mod").read_text()
    )
    return found.group(1) if found else "?"
