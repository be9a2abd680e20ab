"""The real activator as a process (`modelserving activator`), talking to the local cluster with
its kubeconfig, for tests that send it requests as a serving's Service would at zero."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.sidecar_process import stop_gracefully
from tests.support.waiting import wait_for_async


@dataclass
class ActivatorProcess:
    url: str
    grpc_address: str  # host:port of its gRPC port
    process: asyncio.subprocess.Process
    log_file: Path

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        """The sample of its /metrics with this name and exactly these labels; 0 when absent."""
        async with http.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def log(self) -> str:
        return self.log_file.read_text()


@contextlib.asynccontextmanager
async def running_activator(
    directory: Path,
    kubeconfig: str,
    namespace: str,
    *flags: str,
    host: str = "127.0.0.1",
    port: int = 0,
    grpc_port: int = 0,
) -> AsyncIterator[ActivatorProcess]:
    """`modelserving activator` for the servings of `namespace`, at `host`:`port` (an
    activator pod's address and port, as in the pod; else a free port of 127.0.0.1), once
    /readyz says it has listed servings and pods; SIGTERM at the end."""
    port = port or free_port()
    grpc_port = grpc_port or free_port()
    log_file = directory / "activator.log"
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "activator",
            "--kubeconfig",
            kubeconfig,
            "--namespace",
            namespace,
            "--host",
            host,
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            *flags,
            stderr=log_fd,
            stdout=log_fd,
        )
    finally:
        os.close(log_fd)
    activator = ActivatorProcess(f"http://{host}:{port}", f"{host}:{grpc_port}", process, log_file)
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(
                        f"the activator exited ({process.returncode}):\n{activator.log()[-2000:]}"
                    )
                try:
                    async with http.get(f"{activator.url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for_async(ready, timeout=30, what="the activator to be ready")
        yield activator
    finally:
        await stop_gracefully(process)
