"""`modelserving sidecar`: run a serving pod's sidecar from the config file the operator renders.

SIGTERM, in phases that fit the pod's grace period (`modelserving.api`): readiness fails at once
(REST's /readyz and gRPC's health check) while requests are still served for `--shutdown-delay`
seconds, the time the endpoints take to stop routing to the pod; then both ports stop
accepting connections together and requests in flight get `--shutdown-timeout` seconds to
finish; then the inference log is closed (it drains, and keeps in the spool what Kafka has
not acknowledged). A second SIGTERM or SIGINT ends the delay at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path

from aiohttp import web

from modelserving.api import (
    SHUTDOWN_DELAY_SECONDS,
    SHUTDOWN_REQUESTS_SECONDS,
    SIDECAR_CONFIG_FILE,
)
from modelserving_sidecar.app import SHUTTING_DOWN, SidecarRunner, create_app
from modelserving_sidecar.config import ConfigError, SidecarConfig, load_config
from modelserving_sidecar.event_loop import event_loop_factory
from modelserving_sidecar.log.spool.segments import SpoolInUseError
from modelserving_sidecar.routing.router import ROUTING_FILE_NAME

CONFIG_ENV = "MODELSERVING_SIDECAR_CONFIG"
ROUTING_ENV = "MODELSERVING_SIDECAR_ROUTING"
PORT_ENV = "MODELSERVING_SIDECAR_PORT"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV, SIDECAR_CONFIG_FILE),
        help=f"the sidecar's settings file (env {CONFIG_ENV}; default {SIDECAR_CONFIG_FILE})",
    )
    parser.add_argument(
        "--routing",
        default=os.environ.get(ROUTING_ENV),
        help=f"the routing file, read at start and whenever it changes (env {ROUTING_ENV}; "
        f"default {ROUTING_FILE_NAME} beside --config; while there is none, every request goes "
        "to the config's model.version)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ[PORT_ENV]) if os.environ.get(PORT_ENV) else None,
        help=f"listen on this port instead of the file's listen.port (env {PORT_ENV})",
    )
    parser.add_argument("--host", help="listen on this address instead of the file's listen.host")
    parser.add_argument(
        "--shutdown-delay",
        type=float,
        default=0.0,
        help="seconds the sidecar keeps serving after SIGTERM, not ready, while the endpoints "
        "stop routing to it (default %(default)s; the operator sets "
        f"{SHUTDOWN_DELAY_SECONDS} in a serving's pods)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=float(SHUTDOWN_REQUESTS_SECONDS),
        help="seconds requests in flight get to finish once the sidecar stops listening "
        "(default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")


def with_overrides(config: SidecarConfig, host: str | None, port: int | None) -> SidecarConfig:
    listen = config.listen
    if host:
        listen = dataclasses.replace(listen, host=host)
    if port is not None:
        listen = dataclasses.replace(listen, port=port)
    return dataclasses.replace(config, listen=listen)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = with_overrides(load_config(args.config), args.host, args.port)
    except ConfigError as exc:
        print(f"modelserving sidecar: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info(
        "sidecar of ModelServing %s/%s (model %s) on %s:%s (gRPC %s), TF Serving at %s, auth %s",
        config.serving.namespace,
        config.serving.name,
        config.model.name,
        config.listen.host,
        config.listen.port,
        config.grpc.port or "off",
        config.upstream.url,
        config.auth.mode.value,
    )
    routing = Path(args.routing) if args.routing else Path(args.config).parent / ROUTING_FILE_NAME
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        try:
            runner.run(_serve(config, routing, args.shutdown_delay, args.shutdown_timeout))
        except ConfigError as exc:
            print(f"modelserving sidecar: {exc}", file=sys.stderr)
            return 2
        except SpoolInUseError as exc:  # another sidecar writes this spool: the kubelet retries
            print(f"modelserving sidecar: {exc}", file=sys.stderr)
            return 1
    return 0


async def _serve(
    config: SidecarConfig, routing: Path, shutdown_delay: float, shutdown_timeout: float
) -> None:
    """Serve until SIGTERM or SIGINT, then stop as the module docstring says."""
    loop = asyncio.get_running_loop()
    log = logging.getLogger(__name__)
    log.info("event loop: %s", type(loop).__module__)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # access_log=None: one line per request costs more than the request; metrics count them.
    app = create_app(config, routing_file=routing)
    runner = SidecarRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.listen.host, config.listen.port).start()
        # Both ports stop before the app's cleanup: calls in flight finish, and their records
        # reach the log before it drains.
        async with grpc_port(app, config, shutdown_timeout):
            await stop.wait()
            app[SHUTTING_DOWN].set()
            if shutdown_delay > 0:
                log.info("shutting down: not ready, still serving for %s s", shutdown_delay)
                stop.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), shutdown_delay)
            log.info("shutting down: requests in flight get %s s", shutdown_timeout)
            rest_stopped = asyncio.create_task(runner.stop_listening())
        await rest_stopped  # gRPC's server stopped meanwhile, as the block ended
    finally:
        await runner.cleanup()


def grpc_port(
    app: web.Application, config: SidecarConfig, shutdown_timeout: float
) -> AbstractAsyncContextManager[int | None]:
    """TF Serving's gRPC API on config.grpc.port for the app's lifetime; nothing when the port
    is 0. grpc and TF Serving's messages are imported only when there is a port: they add about
    17 MiB to a sidecar that serves REST alone (61 MiB resident against 44)."""
    if not config.grpc.port:
        return nullcontext()
    from modelserving_sidecar.grpc.gateway import serving_grpc

    return serving_grpc(app, config.listen.host, shutdown_timeout)


@asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run an app in this event loop (tests, benchmarks); yields its base URL."""
    runner = SidecarRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()
