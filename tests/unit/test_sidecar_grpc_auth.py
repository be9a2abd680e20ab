"""The credential of a gRPC call is checked before its message is read: a caller without one is
refused UNAUTHENTICATED however large the message it sends, and the sidecar never takes the
message in (a message over grpc.maxMessageBytes would otherwise be RESOURCE_EXHAUSTED); an
authorized call is read, forwarded and answered as before. The sidecar runs in this process in
front of the TF Serving stand-in's gRPC API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.app import create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.main import grpc_port, serving
from tests.support.ports import free_port
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.tfserving_standin_grpc import StandInServicer, running_grpc_standin

MODEL = "half_plus_two"
KEY = "grpc-auth-test-key"
GOOD = (("authorization", f"ApiKey {KEY}"),)
LIMIT = 4096  # grpc.maxMessageBytes of this sidecar: tiny, so a message over it is cheap to send
# A client as TF Serving's users write one, its own limit raised.
CLIENT_OPTIONS = [("grpc.max_send_message_length", 64 << 20)]


@asynccontextmanager
async def grpc_sidecar(
    tmp_path: Path,
) -> AsyncIterator[tuple[PredictionServiceStub, StandInServicer]]:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    standin = TFServingStandIn()
    async with (
        running_standin(standin) as (_, rest_url),
        running_grpc_standin(standin) as (servicer, direct),
    ):
        config = parse_config(
            {
                "serving": {"name": "hpt", "namespace": "demo"},
                "model": {"name": MODEL, "version": 1, "modelId": 17},
                "upstream": {"url": rest_url, "timeoutSeconds": 10},
                "grpc": {"port": free_port(), "upstream": direct, "maxMessageBytes": LIMIT},
                "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
            }
        )
        app = create_app(config)
        async with (
            serving(app),
            grpc_port(app, config, 1) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel,
        ):
            yield PredictionServiceStub(channel), servicer


def predict(values: int) -> apis.PredictRequest:
    shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=values)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
    tensor.float_val.extend([1.0] * values)
    return apis.PredictRequest(model_spec=apis.ModelSpec(name=MODEL), inputs={"x": tensor})


async def test_a_call_without_a_good_credential_is_refused_before_its_message_is_read(tmp_path):
    large = predict(4 << 20)  # 16 MiB, 4,096 times the limit
    assert large.ByteSize() > 4096 * LIMIT
    async with grpc_sidecar(tmp_path) as (stub, servicer):
        refused = []
        for metadata in ((), (("authorization", "ApiKey not-the-key"),)):
            with pytest.raises(grpc.aio.AioRpcError) as call:
                await stub.Predict(large, metadata=metadata, timeout=30)
            refused.append((call.value.code(), call.value.details()))
        # Authorized, the same message is read, and gRPC refuses it for its size as before.
        with pytest.raises(grpc.aio.AioRpcError) as too_large:
            await stub.Predict(large, metadata=GOOD, timeout=30)
        assert servicer.seen == []
        answer = await stub.Predict(predict(4), metadata=GOOD, timeout=10)
    assert refused == [
        (grpc.StatusCode.UNAUTHENTICATED, "An API key is required: Authorization: ApiKey <key>"),
        (grpc.StatusCode.UNAUTHENTICATED, "The API key is not valid for this serving"),
    ]
    assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert list(answer.outputs["y"].float_val) == [2.5] * 4
    assert [call.method for call in servicer.seen] == ["Predict"]
