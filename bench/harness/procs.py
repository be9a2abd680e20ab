"""Processes the benchmark starts: pinned to a core, waited for on their port, measured (CPU
time and resident memory of the whole process tree) and stopped by their own id; and the
project's code at another git revision, for measuring it beside the working tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench import REPO
from bench.harness.stats import parse_proc_stat_cpu, parse_status_kib

PROXY_CORE = 1  # the proxy under test has this core to itself
LOAD_CORE = 0  # load generators, the upstream and the log sink share this one
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A part of the benchmark could not be built, started or measured; the message says which."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class Proc:
    """A started process, pinned with taskset (unless `core` is None), its output in a log
    file; `cwd` is where it runs (another revision's tree, say)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        core: int | None,
        logdir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.logfile = logdir / f"{name}.log"
        pin = ["taskset", "-c", str(core)] if core is not None else []
        with self.logfile.open("ab") as out:
            self.popen = subprocess.Popen(
                [*pin, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        if port is not None:
            self.wait_port(port)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port):
            if self.popen.poll() is not None:
                tail = self.logfile.read_text(errors="replace")[-3000:]
                raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not listen on {port} in {timeout:.0f} s")
            time.sleep(0.05)

    def tree(self) -> list[int]:
        """This process and its descendants (nginx's workers, say)."""
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            path = Path(f"/proc/{parent}/task/{parent}/children")
            with contextlib.suppress(OSError):
                kids = [int(p) for p in path.read_text().split()]
                pids += kids
                frontier += kids
        return pids

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.tree():
            with contextlib.suppress(OSError, IndexError):
                total += process_cpu_seconds(pid)
        return total

    def rss_mib(self) -> float:
        kib = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                kib += parse_status_kib(Path(f"/proc/{pid}/status").read_text())
        return kib / 1024

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)


def control_plane_cpu(cluster_dir: str) -> dict[str, float]:
    """CPU seconds each process of the local cluster (kube-apiserver, etcd, the controller
    manager, the scheduler, KWOK) has used so far, found by kwokctl's pid files."""
    used = {}
    for pid_file in sorted(Path(cluster_dir, "pids").glob("*.pid")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            used[pid_file.stem] = process_cpu_seconds(int(pid_file.read_text()))
    return used


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds one process has used so far (OSError once it is gone)."""
    return parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text(), CLOCK_TICKS)


class ControlPlaneCpu:
    """The cluster's CPU seconds used between entering and leaving: `seconds`, per process
    and in all ("total"). On a small machine the control plane is what a run waits on, and its
    CPU, unlike the wall time, hardly moves with what else the machine does."""

    def __init__(self, cluster_dir: str) -> None:
        self.cluster_dir = cluster_dir
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> ControlPlaneCpu:
        self._before = control_plane_cpu(self.cluster_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        after = control_plane_cpu(self.cluster_dir)
        used = {k: v - self._before[k] for k, v in after.items() if k in self._before}
        self.seconds = {k: round(v, 1) for k, v in {**used, "total": sum(used.values())}.items()}


class PeakRss:
    """Samples a process tree's resident memory in a thread; `peak_mib` once stopped."""

    def __init__(self, proc: Proc, interval: float = 0.1) -> None:
        self.proc = proc
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self.proc.rss_mib())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self.proc.rss_mib())


def run_pinned(cmd: Sequence[str], core: int, timeout: float, **kwargs: object) -> str:
    """Run a command to its end on one core; its stdout, or BenchError with its output."""
    proc = subprocess.run(
        ["taskset", "-c", str(core), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[arg-type]
    )
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def tree_at(rev: str, into: Path) -> Path:
    """The packages as they were at git revision `rev`, unpacked into `into` side by side as
    installed (`modelserving`, `modelserving_sidecar`, `modelserving_operator`), so that a
    process started in `into` imports that revision's code, not the working tree's: the
    comparisons measure it beside the working tree. Revisions from before the source roots
    (sidecar/ and operator/ imported as `modelserving.sidecar` and `modelserving.operator`)
    get those folders moved inside `modelserving/`, as their wheel laid them out."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "modelserving", "sidecar", "operator"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for part in ("sidecar", "operator"):
        package = into / part / f"modelserving_{part}"
        if package.is_dir():
            package.rename(into / package.name)
            (into / part).rmdir()
            continue
        inside = into / "modelserving" / part
        # Older still: a symlink there, which the archive holds.
        if not inside.is_symlink() and not inside.exists():
            (into / part).rename(inside)
    return into
