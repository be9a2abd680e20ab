"""The local environment of real parts (localenv/) as the tests reach it: its settings, tools
aimed at its cluster, and control of its Kafka broker for outage tests."""

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
        return subprocess.run(
            ["kubectl", *args], env=self.tool_env(), capture_output=True, text=True, check=check
        )


def restart_kube_apiserver(down_seconds: float = 0.0) -> float:
    """Kill the cluster's kube-apiserver alone (SIGKILL, as in a crash) and start it again,
    after `down_seconds` if asked; the seconds until it was ready and authorizing again."""
    return float(localenv.kube_apiserver_restart(signal.SIGKILL, down_seconds))


class KafkaBroker:
    """The local broker, for tests that take it down and bring it back (outages)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def stop(self) -> None:
        localenv.kafka_stop()

    def kill(self) -> None:
        localenv.kafka_stop(signal.SIGKILL)

    def start(self) -> None:
        localenv.kafka_start()

    def pause(self) -> None:
        """Hang the broker (SIGSTOP): reachable, answering nothing."""
        localenv.kafka_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if localenv.kafka_pid() is not None:
            localenv.kafka_signal(signal.SIGCONT)
