"""A bare grpc.aio proxy: every call forwarded to the upstream as bytes, no auth, no log, no
routing. It is the floor of the sidecar's gRPC path in the benchmark (as aiohttp_proxy beside it
is of its REST path): the sidecar over gRPC can only be slower than this by what its own work
costs.

    python -m bench.baselines.grpc_aio_proxy --port 8500 --upstream 127.0.0.1:9500
"""

from __future__ import annotations

import argparse
import asyncio

import grpc


def _as_bytes(data: bytes) -> bytes:
    return data


class Forward(grpc.GenericRpcHandler):
    """Any unary method: the request's bytes to the same method upstream, its answer back. The
    handler of each method is made once, at its first call (as the sidecar makes its own once)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method: str = details.method
        if method not in self.handlers:
            upstream: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
                method
            )

            async def forward(request: bytes, _: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
                answer: bytes = await upstream(request)
                return answer

            self.handlers[method] = grpc.unary_unary_rpc_method_handler(
                forward, request_deserializer=_as_bytes, response_serializer=_as_bytes
            )
        return self.handlers[method]


async def serve(port: int, upstream: str) -> None:
    async with grpc.aio.insecure_channel(upstream) as channel:
        server = grpc.aio.server(handlers=[Forward(channel)], options=[("grpc.so_reuseport", 0)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of the gRPC upstream")
    args = parser.parse_args()
    try:
        import uvloop  # the loop the sidecar runs on when it is installed
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
