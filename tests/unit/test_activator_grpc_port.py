"""The activator's gRPC port between a real grpcio client and a real grpc.aio server (the TF
Serving stand-in's gRPC API, playing the pod's sidecar): the serving known from `:authority`,
a call held until its pod is usable and then answered by the pod, the refusals in gRPC's terms,
and the hand-off (a GOAWAY after which the client's next call goes on a new connection, none
failing). The activator's state is fed as its watches would feed it; its one call to the API
server (the wake's scale) is answered by a Cluster that says a pod is already asked for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.activator.app import Activator, ActivatorSettings
from modelserving_sidecar.activator.cluster import Cluster
from modelserving_sidecar.activator.grpc_port import GrpcPort
from modelserving_sidecar.activator.hosts import ServingRef
from modelserving_sidecar.auth.api_keys import KEY_REQUIRED
from tests.support.tfserving_standin import TFServingStandIn
from tests.support.tfserving_standin_grpc import StandInServicer, running_grpc_standin
from tests.support.waiting import wait_for_async

REF = ServingRef("team", "hpt")
AUTHORITY = "hpt.team.svc:8500"


class AlreadyScaled(Cluster):
    """The API server as the wake sees it when a pod is already asked for."""

    def __init__(self) -> None:
        pass

    async def read_scale(self, ref: ServingRef) -> dict[str, Any]:
        return {"spec": {"replicas": 1}}


@dataclass
class Front:
    activator: Activator
    address: str  # the activator's gRPC port
    servicer: StandInServicer
    pod_port: int
    connections: list[int] = field(default_factory=list)

    def serving(self, auth_mode: str = "none") -> None:
        self.activator.put_serving(
            {
                "metadata": {"namespace": REF.namespace, "name": REF.name, "uid": "u"},
                "spec": {"auth": {"mode": auth_mode}},
            },
            deleted=False,
        )

    def pod_ready(self) -> None:
        self.activator.pods.update(
            {
                "metadata": {
                    "namespace": REF.namespace,
                    "name": "hpt-1",
                    "labels": {"app.kubernetes.io/instance": REF.name},
                },
                "status": {
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )

    def channel(self, authority: str = AUTHORITY) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            self.address, options=[("grpc.default_authority", authority)]
        )


@contextlib.asynccontextmanager
async def front(**settings: Any) -> AsyncIterator[Front]:
    async with running_grpc_standin(TFServingStandIn()) as (servicer, pod):
        pod_port = int(pod.rsplit(":", 1)[1])
        activator = Activator(
            ActivatorSettings(pod_grpc_port=pod_port, **settings),
            AlreadyScaled(),
            CollectorRegistry(),
        )
        port = GrpcPort(activator)
        connections: list[int] = []

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            await port.connection(reader, writer)

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        bound = server.sockets[0].getsockname()[1]
        try:
            yield Front(activator, f"127.0.0.1:{bound}", servicer, pod_port, connections)
        finally:
            server.close()
            port.stop()
            await port.closed(1)
            await activator.waker.close()


def predict(x: float) -> apis.PredictRequest:
    shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=1)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[x])
    return apis.PredictRequest(
        model_spec=apis.ModelSpec(name="half_plus_two"), inputs={"x": tensor}
    )


def answer(response: apis.PredictResponse) -> list[float]:
    return list(next(iter(response.outputs.values())).float_val)


async def test_a_call_held_until_its_pod_is_usable_is_answered_by_the_pod() -> None:
    async with front() as setup:
        setup.serving()
        async with setup.channel() as channel:
            stub = PredictionServiceStub(channel)
            calls = [
                asyncio.ensure_future(
                    stub.Predict(predict(float(x)), metadata=[("x-request-id", f"r{x}")])
                )
                for x in range(3)
            ]
            holds = setup.activator.holds

            async def held() -> bool:  # the connection is held for the serving
                return holds.held(REF) == 1

            await wait_for_async(held, 10, "the connection held", interval=0.01)
            assert not any(call.done() for call in calls)
            setup.pod_ready()
            answers = [answer(await call) for call in calls]
    assert answers == [[2.0], [2.5], [3.0]]
    # Each call reached the pod with its metadata.
    assert sorted(seen.metadata["x-request-id"] for seen in setup.servicer.seen) == [
        "r0",
        "r1",
        "r2",
    ]
    assert (
        setup.activator.metrics.registry.get_sample_value(
            "modelserving_activator_forwarded_requests_total",
            {"namespace": REF.namespace, "serving": REF.name},
        )
        == 1.0
    )


async def test_after_the_handoff_the_next_calls_go_on_a_new_connection_and_none_fails() -> None:
    async with front(grpc_handoff_seconds=0.2) as setup:
        setup.serving()
        setup.pod_ready()
        async with setup.channel() as channel:
            stub = PredictionServiceStub(channel)
            assert answer(await stub.Predict(predict(2.0))) == [3.0]
            # Calls keep going across the GOAWAY: none fails, and a second connection opens.
            deadline = asyncio.get_running_loop().time() + 10
            while len(setup.connections) < 2:
                assert asyncio.get_running_loop().time() < deadline, "no second connection"
                assert answer(await stub.Predict(predict(4.0))) == [4.0]
            assert answer(await stub.Predict(predict(6.0))) == [5.0]
    assert len(setup.connections) == 2


async def test_an_authority_no_serving_answers_to_is_not_found_saying_which() -> None:
    async with front() as setup:
        setup.serving()
        async with setup.channel("other.team.svc:8500") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await PredictionServiceStub(channel).Predict(predict(1.0))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "No serving answers to the authority 'other.team.svc:8500'"


async def test_a_call_without_credentials_is_refused_before_it_can_wake_the_serving() -> None:
    async with front() as setup:
        setup.serving("apiKey")
        async with setup.channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await PredictionServiceStub(channel).Predict(predict(1.0))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == KEY_REQUIRED
    assert setup.activator.holds.held(REF) == 0 and not setup.servicer.seen


async def test_a_call_held_past_its_deadline_is_unavailable_with_a_retry_pushback() -> None:
    async with front(hold_seconds=0.3, retry_after=7) as setup:
        setup.serving("apiKey")
        async with setup.channel() as channel:
            call = PredictionServiceStub(channel).Predict(
                predict(1.0), metadata=[("authorization", "ApiKey some-key")]
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == (
        "The serving team/hpt is scaled to zero and had no ready pod within 0.3 s; try again"
    )
    assert dict(refused.value.trailing_metadata() or ())["grpc-retry-pushback-ms"] == "7000"
    assert not setup.servicer.seen


async def test_what_is_not_http2_gets_a_goaway_and_nothing_else() -> None:
    async with front() as setup:
        setup.serving()
        host, port = setup.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: hpt.team.svc\r\n\r\n")
        # Its empty SETTINGS, then a GOAWAY with PROTOCOL_ERROR; then the activator waits for
        # the client to close (it would lose its last frames to a reset otherwise).
        received = await asyncio.wait_for(reader.readexactly(9 + 17), 5)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and then it closes too
        writer.close()
    assert received == bytes.fromhex("000000040000000000") + bytes.fromhex(
        "000008070000000000" + "00000000" + "00000001"
    )
