"""The local environment of real parts (`localenv.py up`) as the benchmark sees it: its
settings (the cluster's kubeconfig, the Kafka broker's address), its broker stopped and
started for the outage, and a Jaeger of the benchmark's own for the tracing rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness.procs import LOAD_CORE, BenchError, log

LOCALENV = REPO / "localenv" / "localenv.py"
JAEGER_NAME = "bench-jaeger"  # its state under the environment's spare parts


def localenv_settings() -> dict[str, Any] | None:
    """What `localenv.py up` wrote to env.json, or None when the environment is not up."""
    # The same override localenv.py takes: a clean clone can use another checkout's environment.
    state = Path(os.environ.get("MODELSERVING_LOCALENV", REPO / ".localenv"))
    env_json = state / "env.json"
    if not env_json.exists():
        return None
    return json.loads(env_json.read_text())


def localenv_kafka(action: str, tries: int = 4) -> None:
    """Stop or start the shared broker through localenv; a start is tried again, since others
    need the broker back (a start can fail when its controller port was taken meanwhile)."""
    for attempt in range(1, tries + 1):
        log(f"Kafka broker: {action}" + (f" (try {attempt})" if attempt > 1 else ""))
        proc = subprocess.run(
            [sys.executable, str(REPO / "localenv" / "localenv.py"), "kafka", action],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if proc.returncode == 0:
            return
        log(f"Kafka broker {action} failed: {proc.stderr.strip()[-500:]}")
        time.sleep(3)
    raise BenchError(f"the Kafka broker did not {action} in {tries} tries")


def jaeger_start() -> str:
    """A real Jaeger v2 (all in one, spans in memory) of the benchmark's own, started by
    localenv on the load core (it inherits the taskset), as a collector runs beside a pod rather
    than on its core: its OTLP/HTTP traces URL."""
    command = ["jaeger", "start", "--name", JAEGER_NAME]
    proc = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), sys.executable, str(LOCALENV), *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError(f"Jaeger did not start: {proc.stderr.strip()[-500:]}")
    return str(json.loads(proc.stdout.strip().splitlines()[-1])["otlp_http"])


def jaeger_stop() -> None:
    subprocess.run(
        [sys.executable, str(LOCALENV), "jaeger", "stop", "--name", JAEGER_NAME],
        capture_output=True,
        timeout=60,
    )
