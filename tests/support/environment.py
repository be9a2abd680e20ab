"""The local environment of real parts (localenv/) as the tests reach it: its settings, tools
aimed at its cluster, and the parts a test can have to itself to take them down: a second
API server, a broker of its own."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

from tests.support.scripts import load_script

localenv = load_script("localenv/localenv.py", "localenv")


@dataclass(frozen=True)
class LocalEnv:
    """The running environment: what a test needs to reach its parts."""

    kubeconfig: str
    kafka_bootstrap: str
    bin_path: str
    # The broker's secured listeners and their client files (localenv's KafkaListeners).
    kafka: localenv.KafkaListeners

    def tool_env(self) -> dict[str, str]:
        """Environment for subprocesses (kubectl, helm) aimed at the local cluster."""
        return {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "PATH": f"{self.bin_path}{os.pathsep}{os.environ['PATH']}",
        }

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """kubectl against the local cluster; when `check`, a failure raises with what kubectl
        said (its stderr), not only its exit status."""
        done = subprocess.run(
            ["kubectl", *args], env=self.tool_env(), capture_output=True, text=True
        )
        if check and done.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done


@dataclass(frozen=True)
class SpareApiServer:
    """A second kube-apiserver of the cluster (same etcd, a port of its own) that a test has to
    itself: its operator talks to it, and the test restarts it without taking the API server
    from the tests running beside it."""

    name: str
    kubeconfig: str

    def restart(self, down_seconds: float = 0.0) -> float:
        """Kill it (SIGKILL, as in a crash) and start it again, after `down_seconds` if asked;
        the seconds until it was ready and authorizing again."""
        return float(localenv.kube_apiserver_restart(signal.SIGKILL, down_seconds, self.name))


class KafkaBroker:
    """A real broker to take down and bring back (outages): one of a test's own (`name`:
    localenv's spare broker, one node, plaintext), while the shared broker serves the tests
    beside it; or the shared one (no name), for a tool that runs alone. Started if it is not
    running."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.home = localenv.spare_broker_dir(name) if name else localenv.kafka_dir()
        self.bootstrap = self._start()

    def _start(self) -> str:
        return str(localenv.spare_broker_start(self.name) if self.name else localenv.kafka_start())

    def stop(self) -> None:
        localenv.kafka_stop(home=self.home)

    def kill(self) -> None:
        localenv.kafka_stop(signal.SIGKILL, self.home)

    def start(self) -> None:
        self._start()

    def pause(self) -> None:
        """Hang the broker (SIGSTOP): reachable, answering nothing."""
        localenv.kafka_signal(signal.SIGSTOP, self.home)

    def resume(self) -> None:
        if localenv.kafka_pid(self.home) is not None:
            localenv.kafka_signal(signal.SIGCONT, self.home)
