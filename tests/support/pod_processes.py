"""Plays the kubelet's part for a serving's pods on the process node (tests/support/
process_node): a real sidecar process for each of the serving's pods that KWOK made Ready,
listening at the address the cluster gave the pod and the sidecar's port, as the pod's
container would; stopped (SIGTERM, its shutdown as in a pod) when the pod goes.

What is real: the API server, the scheduler, the Deployment and ReplicaSet controllers, the
EndpointSlice controller, KWOK's pod lifecycle (it marks a pod Ready at once: a sidecar may
start a moment after its pod says Ready), and the sidecar. What it plays: the kubelet's start
and stop of the sidecar container. TF Serving is the stand-in the test passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from modelserving import api
from tests.support.sidecar_process import SidecarProcess, running_sidecar

POLL_SECONDS = 0.2


class ServingPods:
    """The sidecars of one serving's pods, by pod name, kept in step with the cluster."""

    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        serving: str,
        directory: Path,
        config: Callable[[str], dict[str, Any]],
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.serving = serving
        self.directory = directory
        self.config = config  # the sidecar's config, for a pod's name
        self.sidecars: dict[str, SidecarProcess] = {}  # those serving now
        self._stops: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def addresses(self) -> list[str]:
        """The base URLs of the sidecars serving now."""
        return [sidecar.url for sidecar in self.sidecars.values()]

    def ips(self) -> list[str]:
        """The pod addresses the sidecars serving now listen at."""
        return [sidecar.config["listen"]["host"] for sidecar in self.sidecars.values()]

    async def keep(self) -> None:
        """Start a sidecar for each Ready pod, stop those of pods gone or going, until cancelled."""
        selector = f"{api.LABEL_INSTANCE}={self.serving}"
        while True:
            pods = await asyncio.to_thread(
                self.core.list_namespaced_pod, self.namespace, label_selector=selector
            )
            running = {}
            for pod in pods.items:
                ready = any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
                )
                if ready and pod.status.pod_ip and pod.metadata.deletion_timestamp is None:
                    running[pod.metadata.name] = pod.status.pod_ip
            for name, address in running.items():
                if name not in self._tasks:
                    self._stops[name] = asyncio.Event()
                    self._tasks[name] = asyncio.create_task(self._run(name, address))
            for name in set(self._tasks) - running.keys():
                self._stops[name].set()
                if self._tasks[name].done():
                    del self._tasks[name], self._stops[name]
            await asyncio.sleep(POLL_SECONDS)

    async def _run(self, name: str, address: str) -> None:
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        async with running_sidecar(
            directory, self.config(name), None, host=address, port=api.SIDECAR_PORT
        ) as sidecar:
            self.sidecars[name] = sidecar
            try:
                await self._stops[name].wait()
            finally:
                del self.sidecars[name]

    async def stop(self) -> None:
        for stop in self._stops.values():
            stop.set()
        ended = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        failed = [e for e in ended if isinstance(e, Exception)]
        if failed:
            raise failed[0]  # a sidecar that did not start or stop as it should


@contextlib.asynccontextmanager
async def serving_pods(
    core: client.CoreV1Api,
    namespace: str,
    serving: str,
    directory: Path,
    config: Callable[[str], dict[str, Any]],
) -> AsyncIterator[ServingPods]:
    pods = ServingPods(core, namespace, serving, directory, config)
    keeping = asyncio.create_task(pods.keep())
    try:
        yield pods
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await pods.stop()
