"""`modelserving sidecar` as a process: it starts from its config file, serves, and on SIGTERM
stops accepting connections while the requests in flight finish."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import yaml

from tests.support.ports import free_port
from tests.support.sidecar_configs import sidecar_config
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.waiting import wait_for_async

MODEL = "half_plus_two"


def write_config(path: Path, upstream: str) -> Path:
    # The --port flag wins over the file's port.
    config = sidecar_config(
        upstream, model={"name": MODEL}, listen={"host": "127.0.0.1", "port": 1}
    )
    path.write_text(yaml.safe_dump(config))
    return path


async def connect_refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(tmp_path):
    standin = TFServingStandIn(delay_seconds=1.5)
    async with running_standin(standin) as (_, upstream), aiohttp.ClientSession() as http:
        port = free_port()
        config = write_config(tmp_path / "sidecar.yaml", upstream)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config),
            "--port",
            str(port),
            stderr=asyncio.subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            async def alive():
                try:
                    async with http.get(f"{url}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for_async(alive, timeout=20, what="the sidecar process to serve")
            in_flight = asyncio.create_task(
                http.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [4.0]})
            )
            await wait_for_async(
                lambda: asyncio.sleep(0, bool(standin.forwarded)), timeout=5, what="the request"
            )
            process.send_signal(signal.SIGTERM)
            await wait_for_async(lambda: connect_refused(port), timeout=1, what="no new connection")
            assert not in_flight.done()
            async with await in_flight as resp:
                assert (resp.status, await resp.json()) == (200, {"predictions": [4.0]})
            assert await asyncio.wait_for(process.wait(), 10) == 0
            assert b"event loop: uvloop" in await process.stderr.read()  # type: ignore[union-attr]
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_sigterm_with_a_delay_fails_readiness_first_and_keeps_serving(tmp_path):
    # In a pod the operator gives the sidecar a delay: endpoints stop routing to a terminating
    # pod within seconds, and a request routed meanwhile must still be answered.
    delay = 3.0
    async with (
        running_standin(TFServingStandIn()) as (_, upstream),
        aiohttp.ClientSession() as http,
    ):
        port = free_port()
        config = write_config(tmp_path / "sidecar.yaml", upstream)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "modelserving.cli",
            "sidecar",
            "--config",
            str(config),
            "--port",
            str(port),
            "--shutdown-delay",
            str(delay),
            stderr=asyncio.subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            async def status(method: str, path: str) -> int | None:
                try:
                    async with http.request(method, f"{url}{path}", json={"instances": [4.0]}) as r:
                        await r.read()
                        return r.status
                except aiohttp.ClientConnectionError:
                    return None

            async def ready() -> bool:
                return await status("GET", "/readyz") == 200

            await wait_for_async(ready, timeout=20, what="the sidecar process to be ready")
            process.send_signal(signal.SIGTERM)

            async def not_ready() -> bool:
                return await status("GET", "/readyz") == 503

            await wait_for_async(not_ready, timeout=2, what="readiness to fail", interval=0.05)
            failing_since = asyncio.get_running_loop().time()
            answers = []
            while asyncio.get_running_loop().time() - failing_since < 1.0:  # well within delay
                answers.append(await status("POST", f"/v1/models/{MODEL}:predict"))
            assert answers and set(answers) == {200}, answers
            await wait_for_async(
                lambda: connect_refused(port),
                timeout=delay + 5,
                what="no new connection once the delay is over",
            )
            assert await asyncio.wait_for(process.wait(), 10) == 0
            said = await process.stderr.read()  # type: ignore[union-attr]
            assert b"shutting down: not ready, still serving for 3.0 s" in said
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_a_bad_config_fails_the_start_naming_the_setting(tmp_path):
    config = tmp_path / "sidecar.yaml"
    config.write_text("serving: {name: hpt, namespace: demo}\nmodel: {name: m, version: one}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modelserving.cli",
        "sidecar",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"model.version" in err


async def test_a_spool_another_sidecar_writes_fails_the_start_in_one_line(tmp_path):
    # Two pods on one claim: the second sidecar says whose spool it is and exits (the
    # kubelet's back-off retries it), with no traceback to read through.
    spool = tmp_path / "spool"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys, time\n"
        "from modelserving_sidecar.log.spool.segments import Spool\n"
        f"Spool({str(spool)!r}, max_bytes=1 << 20, segment_bytes=1 << 16,\n"
        "      fsync_interval=1).open()\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"  # type: ignore[union-attr]
        config = tmp_path / "sidecar.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "serving": {"name": "hpt", "namespace": "demo"},
                    "model": {"name": MODEL, "version": 1, "modelId": 1},
                    "listen": {"host": "127.0.0.1", "port": free_port()},
                    "grpc": {"port": 0},
                    "upstream": {"url": "http://127.0.0.1:9"},
                    "auth": {"mode": "none"},
                    "logging": {
                        "mode": "ALL",
                        "topic": "t",
                        "bootstrapServers": "127.0.0.1:9",
                        "spoolDir": str(spool),
                    },
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
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 1
        assert f"is in use by pid {holder.pid} on ".encode() in err
        assert b"Traceback" not in err
    finally:
        holder.kill()
        await holder.wait()
