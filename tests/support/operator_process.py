"""`modelserving operator` run for real as a subprocess, watching one test namespace, with its
log in a file of the test's own, as the chart's ServiceAccount when given its kubeconfig."""

from __future__ import annotations

import datetime
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support import REPO

# Where the operator keeps its model-id counter (--operator-namespace).
COUNTER_NAMESPACE = "modelserving-system"


class Operator:
    """`modelserving operator` as a subprocess watching one namespace (or several: a
    sequence of names)."""

    def __init__(
        self,
        local_env,
        namespace: str | Sequence[str],
        log_dir: Path,
        flags: Sequence[str] = (),
        *,
        kubeconfig: Path | None = None,
        name: str = "operator",
        kafka_bootstrap: str | None = None,
    ) -> None:
        self.local_env, self.namespace, self.log_dir = local_env, namespace, log_dir
        self.flags = list(flags)  # added to the command line
        # Whose credentials: the chart's ServiceAccount (chart_account), else the admin's.
        self.kubeconfig = kubeconfig
        self.name = name  # of its log files, and its kopf peering identity
        # The shared broker's unless the test has one of its own (conftest's kafka_broker).
        self.kafka_bootstrap = kafka_bootstrap or local_env.kafka_bootstrap
        self.excused: list[tuple[float, float]] = []  # see excuse_refusals
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        cmd = [
            sys.executable,
            "-m",
            "modelserving.cli",
            "operator",
            *(
                arg
                for watched in (
                    [self.namespace] if isinstance(self.namespace, str) else self.namespace
                )
                for arg in ("--namespace", watched)
            ),
            "--operator-namespace",
            COUNTER_NAMESPACE,
            "--kafka-bootstrap-servers",
            self.kafka_bootstrap,
            "--retry-seconds",
            "2",
            "--kafka-timeout",
            "3",
            *self.flags,
        ]
        env = {**self.local_env.tool_env(), "POD_ID": f"{self.name}-{self.starts}"}
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the process ends at once, with no chance to leave its peering."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stopped_cleanly(self) -> bool:
        return self.proc is not None and self.proc.returncode in (0, -signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text()

    def refusals(self) -> list[str]:
        """Lines of all its runs' logs where the API server refused it a right (403): under
        the chart's ServiceAccount, a right the chart lacks."""
        return [
            line
            for run in range(1, self.starts + 1)
            for line in (self.log_dir / f"{self.name}-{run}.log").read_text().splitlines()
            if "forbidden" in line.lower() and not self._excused(line)
        ]

    def excuse_refusals(self, start: float, end: float) -> None:
        """Refusals logged between these times (time.time()) are the API server's, not the
        chart's: one that has just started refuses everyone until its RBAC caches are filled."""
        self.excused.append((start, end))

    def _excused(self, line: str) -> bool:
        try:  # the log's lines start with logging's asctime, in local time
            when = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            return False
        return any(start <= when <= end for start, end in self.excused)
