"""A sidecar without a gRPC port (grpc.port 0, spec.sidecar.grpc.enabled false) pays nothing for
gRPC: grpc and protobuf (TF Serving's messages) are never loaded, in the process as it runs and
on every import path of the sidecar's modules, the inference log's included."""

from __future__ import annotations

import asyncio
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

import modelserving_sidecar
from tests.support.ports import free_port
from tests.support.tfserving_standin import running_standin
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"
# Only these modules serve gRPC; the rest of the sidecar must load without grpc or protobuf.
# The sidecar's gRPC part: the only one that imports grpc and protobuf.
GRPC_PACKAGE = "modelserving_sidecar.grpc"
# grpc's C core and protobuf's, as the process maps them.
GRPC_LIBRARY = "/grpc/_cython/cygrpc"
PROTOBUF_LIBRARY = "/google/_upb/"


def loaded_libraries(pid: int) -> str:
    """The files the process has mapped (its shared libraries among them)."""
    return Path(f"/proc/{pid}/maps").read_text()


async def files_of_a_sidecar_that_answered(tmp_path: Path, grpc_port: int) -> str:
    """The files a sidecar process has mapped once it answered a REST prediction."""
    async with running_standin() as (_, upstream), aiohttp.ClientSession() as http:
        port = free_port()
        config = tmp_path / "sidecar.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "serving": {"name": "hpt", "namespace": "demo"},
                    "model": {"name": MODEL, "version": 1, "modelId": 1},
                    "listen": {"host": "127.0.0.1", "port": port},
                    "grpc": {"port": grpc_port},
                    "upstream": {"url": upstream},
                    "auth": {"mode": "none"},
                }
            )
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config),
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def answered() -> bool:
            try:
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict", json={"instances": [1.0]}
                ) as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        try:
            await wait_for_async(answered, timeout=20, what="the sidecar's first answer")
            if grpc_port:  # the gRPC port opens just after the REST one
                await wait_for_async(
                    lambda: asyncio.sleep(0, GRPC_LIBRARY in loaded_libraries(process.pid)),
                    timeout=20,
                    what="grpc to be loaded",
                )
            return loaded_libraries(process.pid)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 20)


async def test_a_sidecar_without_a_grpc_port_never_loads_grpc_or_protobuf(tmp_path: Path) -> None:
    maps = await files_of_a_sidecar_that_answered(tmp_path, grpc_port=0)
    assert GRPC_LIBRARY not in maps
    assert PROTOBUF_LIBRARY not in maps


async def test_a_sidecar_with_a_grpc_port_loads_grpc(tmp_path: Path) -> None:
    # The other side of the test above: the same check sees grpc when the sidecar uses it.
    maps = await files_of_a_sidecar_that_answered(tmp_path, grpc_port=free_port())
    assert GRPC_LIBRARY in maps


def test_no_module_of_the_sidecar_but_the_grpc_ones_imports_grpc_or_protobuf() -> None:
    names = sorted(
        m.name
        for m in pkgutil.walk_packages(modelserving_sidecar.__path__, "modelserving_sidecar.")
        if not m.name.startswith(GRPC_PACKAGE)
    )
    assert "modelserving_sidecar.log.records" in names and "modelserving_sidecar.main" in names
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r} + ['modelserving.cli']:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "                        if m.split('.')[0] == 'grpc' or m.startswith('google.protobuf')\n"
        "                        or m.startswith('modelserving.tfserving'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
