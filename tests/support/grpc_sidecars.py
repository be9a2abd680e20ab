"""The sidecar's gRPC stories' setup: the real sidecar process with its gRPC port before the TF
Serving stand-in (REST and gRPC), an API key, a client's options as TF Serving's users write
them, and Predict requests."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving_sidecar.auth.api_keys import hash_api_key
from tests.support.kube_callers import SERVING
from tests.support.ports import free_port
from tests.support.sidecar_process import SidecarProcess, running_sidecar
from tests.support.tfserving_standin import StandInModel, TFServingStandIn, running_standin
from tests.support.tfserving_standin_grpc import StandInServicer, running_grpc_standin

MODEL = "half_plus_two"
KEY = "grpc-test-key"
LIMIT = 8 * 1024 * 1024  # grpc.maxMessageBytes of these tests' sidecar
# A client as TF Serving's users write one, with its own message size limit raised.
CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]
GOOD = (("authorization", f"ApiKey {KEY}"),)


@dataclass
class Setup:
    sidecar: SidecarProcess
    grpc_address: str  # the sidecar's gRPC port
    direct: str  # the stand-in's gRPC port
    standin: TFServingStandIn
    servicer: StandInServicer


@asynccontextmanager
async def grpc_sidecar(
    tmp_path: Path,
    models: dict[str, StandInModel] | None = None,
    routing: dict[str, Any] | None = None,
    logging: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    namespace: str = "demo",
) -> AsyncIterator[Setup]:
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    standin = TFServingStandIn(models)
    port = free_port()
    config = {
        "serving": {"name": SERVING, "namespace": namespace},
        "model": {"name": MODEL, "version": 1, "modelId": 17},
        "auth": auth or {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
        "logging": logging or {"mode": "NONE"},
    }
    async with (
        running_standin(standin) as (_, rest_url),
        running_grpc_standin(standin) as (servicer, direct),
    ):
        config["upstream"] = {"url": rest_url, "timeoutSeconds": 10}
        config["grpc"] = {"port": port, "upstream": direct, "maxMessageBytes": LIMIT}
        async with running_sidecar(tmp_path, config, routing) as sidecar:
            yield Setup(sidecar, f"127.0.0.1:{port}", direct, standin, servicer)


def log_all(local_env: Any, topic: str, tmp_path: Path) -> dict[str, Any]:
    """The sidecar's log settings of these tests: every call, into the test's topic."""
    return {
        "mode": "ALL",
        "topic": topic,
        "bootstrapServers": local_env.kafka_bootstrap,
        "spoolDir": str(tmp_path / "spool"),
    }


def floats(values: list[float], packed: bool = False) -> tensor_pb2.TensorProto:
    shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=len(values))])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
    if packed:
        tensor.tensor_content = struct.pack(f"<{len(values)}f", *values)
    else:
        tensor.float_val.extend(values)
    return tensor


def predict_request(values: list[float], packed: bool = False, **spec: Any) -> Any:
    return apis.PredictRequest(
        model_spec=apis.ModelSpec(name=MODEL, **spec), inputs={"x": floats(values, packed)}
    )
