"""`modelserving activator`: hold the requests of servings at zero, wake them, and forward.

SIGTERM (or SIGINT): readiness fails, every held request is answered 503 with Retry-After (none
is left hanging), the port stops accepting, and requests being forwarded get
`--shutdown-timeout` seconds to be answered.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from modelserving.api import SIDECAR_GRPC_PORT, SIDECAR_PORT
from modelserving_sidecar.activator.app import ACTIVATOR, ActivatorSettings, create_app
from modelserving_sidecar.activator.grpc_port import GrpcPort
from modelserving_sidecar.activator.hosts import DEFAULT_CLUSTER_DOMAIN
from modelserving_sidecar.event_loop import event_loop_factory

DEFAULTS = ActivatorSettings()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        default="",
        help="watch the servings of this namespace only (default: every namespace)",
    )
    parser.add_argument(
        "--cluster-domain",
        default=DEFAULT_CLUSTER_DOMAIN,
        help="the cluster's DNS domain, the end of a Service's longest name (default %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig",
        default="",
        help="reach the API server with this kubeconfig (default: the pod's service account, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=SIDECAR_PORT,
        help="listen port: the sidecar's, which a serving's Service targets (default %(default)s)",
    )
    parser.add_argument(
        "--pod-port",
        type=int,
        default=DEFAULTS.pod_port,
        help="the serving pods' sidecar port requests are forwarded to (default %(default)s)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=SIDECAR_GRPC_PORT,
        help="gRPC listen port: the sidecar's, which a serving's Service targets; 0 for none "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--pod-grpc-port",
        type=int,
        default=DEFAULTS.pod_grpc_port,
        help="the serving pods' sidecar gRPC port connections are joined to (default %(default)s)",
    )
    parser.add_argument(
        "--grpc-handoff-seconds",
        type=float,
        default=DEFAULTS.grpc_handoff_seconds,
        help="a gRPC connection joined to a pod is told to leave the activator (a GOAWAY that "
        "lets its calls finish) this long after, so that its next calls go to the serving's "
        "pods directly (default %(default)s)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=DEFAULTS.queue_size,
        help="requests held per serving while it wakes; more are refused with 503 "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=DEFAULTS.hold_seconds,
        help="how long a request is held for a ready pod before it gets 503 (default %(default)s)",
    )
    parser.add_argument(
        "--wake-interval",
        type=float,
        default=DEFAULTS.wake_interval,
        help="at most one wake (scale 0 -> 1) per serving this often, in seconds "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--retry-after",
        type=int,
        default=DEFAULTS.retry_after,
        help="the Retry-After, in seconds, of a 503 for a request not held (default %(default)s)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULTS.max_request_bytes,
        help="the largest request body held and forwarded; larger ones get 413 "
        "(default %(default)s, the sidecar's own default)",
    )
    parser.add_argument(
        "--tracing-endpoint",
        default="",
        help="the OTLP/HTTP traces URL spans of sampled requests go to (default: the "
        "OTEL_EXPORTER_OTLP_* variables' collector, else no spans)",
    )
    parser.add_argument(
        "--tracing-ratio",
        type=float,
        default=DEFAULTS.tracing_ratio,
        help="of the requests that come without a trace context, the share that starts one; a "
        "caller's sampled trace is always continued (default %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=20.0,
        help="seconds requests being forwarded get to finish after SIGTERM (default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")


def settings_of(args: argparse.Namespace) -> ActivatorSettings:
    for flag in (
        "queue_size",
        "hold_seconds",
        "wake_interval",
        "max_request_bytes",
        "grpc_handoff_seconds",
    ):
        if getattr(args, flag) <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be more than 0")
    if args.retry_after < 0:
        raise ValueError("--retry-after must be 0 or more")
    if not 0 <= args.tracing_ratio <= 1:
        raise ValueError("--tracing-ratio must be from 0 to 1")
    return ActivatorSettings(
        namespace=args.namespace,
        cluster_domain=args.cluster_domain.strip("."),
        kubeconfig=args.kubeconfig,
        pod_port=args.pod_port,
        pod_grpc_port=args.pod_grpc_port,
        grpc_handoff_seconds=args.grpc_handoff_seconds,
        queue_size=args.queue_size,
        hold_seconds=args.hold_seconds,
        wake_interval=args.wake_interval,
        retry_after=args.retry_after,
        max_request_bytes=args.max_request_bytes,
        tracing_endpoint=args.tracing_endpoint,
        tracing_ratio=args.tracing_ratio,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = settings_of(args)
    except ValueError as exc:
        print(f"modelserving activator: {exc}", flush=True)
        return 2
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(settings, args.host, (args.port, args.grpc_port), args.shutdown_timeout))
    return 0


async def _serve(
    settings: ActivatorSettings, host: str, ports: tuple[int, int], shutdown: float
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port, grpc_port = ports
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown)
    await runner.setup()
    grpc: GrpcPort | None = None
    grpc_server: asyncio.Server | None = None
    log = logging.getLogger(__name__)
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("activator listening on %s:%s", host, port)
        if grpc_port:
            grpc = GrpcPort(app[ACTIVATOR])
            grpc_server = await asyncio.start_server(grpc.connection, host, grpc_port)
            log.info("activator's gRPC port: %s:%s", host, grpc_port)
        await stop.wait()
        # Held requests are answered first: cleanup would wait for them as requests in flight.
        app[ACTIVATOR].stop()
        if grpc_server is not None and grpc is not None:
            grpc_server.close()
            grpc.stop()
    finally:
        await runner.cleanup()
        if grpc is not None:
            await grpc.closed(shutdown)
