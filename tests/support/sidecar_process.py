"""The real sidecar as a process (`modelserving sidecar`), started from a config file and a
routing file laid out as the kubelet mounts a ConfigMap, for tests that hold it to what a pod
would see: the routing file replaced in place, the process left running."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from modelserving import api
from tests.support.ports import free_port
from tests.support.waiting import wait_for_async


def write_configmap(directory: Path, files: dict[str, str]) -> None:
    """Files as the kubelet writes a ConfigMap volume, and replaces them: a timestamped folder,
    the `..data` link swapped to it at once, and each key a link through `..data`."""
    directory.mkdir(parents=True, exist_ok=True)
    real = Path(tempfile.mkdtemp(prefix="..", dir=directory))
    for name, text in files.items():
        (real / name).write_text(text)
    swap = directory / "..data_tmp"
    swap.symlink_to(real.name)
    swap.replace(directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


@dataclass
class SidecarProcess:
    """A running sidecar: its URL, its process, and its ConfigMap folder."""

    url: str
    process: asyncio.subprocess.Process
    config_dir: Path
    config: dict[str, Any]

    def set_routing(self, routing: dict[str, Any]) -> None:
        """Replace routing.yaml as the kubelet does when the ConfigMap changes."""
        write_configmap(
            self.config_dir,
            {"sidecar.yaml": json.dumps(self.config), "routing.yaml": yaml.safe_dump(routing)},
        )

    async def metric(self, http: aiohttp.ClientSession, sample: str) -> float:
        """One sample of its /metrics, e.g. `name{label="x"}`; 0 when absent."""
        async with http.get(f"{self.url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return 0.0


@contextlib.asynccontextmanager
async def running_sidecar(
    directory: Path,
    config: dict[str, Any],
    routing: dict[str, Any] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **env: str,
) -> AsyncIterator[SidecarProcess]:
    """`modelserving sidecar --config <dir>/sidecar.yaml` (routing.yaml beside it, as the
    operator mounts them), serving once /healthz answers; SIGTERM at the end. It listens at
    `host`:`port` (a pod's address and the sidecar's port, as in the pod), or a free port."""
    port = port or free_port()
    # No gRPC port unless the test asks for one; one the operator rendered (the pod's, which is
    # TF Serving's 8500 too) becomes one of the test's own: the machine is shared.
    grpc = {"port": 0, **config.get("grpc", {})}
    if grpc["port"] == api.SIDECAR_GRPC_PORT:
        grpc["port"] = free_port()
    config = {**config, "grpc": grpc, "listen": {"host": host, "port": port}}
    config_dir = directory / "config"
    files = {"sidecar.yaml": json.dumps(config)}
    if routing is not None:
        files["routing.yaml"] = yaml.safe_dump(routing)
    write_configmap(config_dir, files)
    log_fd = os.open(directory / "sidecar.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config_dir / "sidecar.yaml"),
            "--log-level",
            "INFO",
            env={**os.environ, **env},
            stderr=log_fd,
        )
    finally:
        os.close(log_fd)
    url = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def serving() -> bool:
                if process.returncode is not None:
                    log = (directory / "sidecar.log").read_text()[-2000:]
                    raise AssertionError(f"the sidecar exited ({process.returncode}):\n{log}")
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for_async(serving, timeout=30, what="the sidecar process to serve")
        yield SidecarProcess(url, process, config_dir, config)
    finally:
        await stop_gracefully(process)


async def stop_gracefully(process: asyncio.subprocess.Process, seconds: float = 30) -> None:
    """SIGTERM, as the kubelet stops a container, and SIGKILL after `seconds`."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), seconds)
        except TimeoutError:
            process.kill()
            await process.wait()
