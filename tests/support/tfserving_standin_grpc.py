"""The TF Serving stand-in's gRPC API: `tensorflow.serving.PredictionService` (Predict,
Classify, Regress, MultiInference, GetModelMetadata) and `ModelService.GetModelStatus`, from the
project's own definitions of TF Serving's messages (modelserving.tfserving), answering as TF
Serving does for the same models, versions, labels and states as the REST stand-in (the same
`TFServingStandIn`): NOT_FOUND `Servable not found for request: Specific(<name>, <version>)`
for a version that is not AVAILABLE, INVALID_ARGUMENT for a request the model cannot take, and
no message size limit (TF Serving sets its gRPC server's to the largest int). MultiInference as
TF Serving runs it: the first task's model spec finds the version, every task must name the same
model and a signature of its own, and each gets a classify or regress result of the one input.

As a process (the demo's TF Serving), both APIs of one stand-in, on TF Serving's two ports:

    python -m tests.support.tfserving_standin_grpc --port 8501 --grpc-port 8510 [--model NAME]
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, wrappers_pb2

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.serving_apis_pb2_grpc import (
    add_ModelServiceServicer_to_server,
    add_PredictionServiceServicer_to_server,
)
from tests.support.tfserving_standin import (
    AVAILABLE,
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
    standin_arguments,
    standin_of,
)

_STATES = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
_CODES = {"OK": 0, "NOT_FOUND": 5, "INVALID_ARGUMENT": 3, "UNKNOWN": 2}
_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"


@dataclass
class SeenCall:
    method: str  # e.g. /tensorflow.serving.PredictionService/Predict
    metadata: dict[str, str]
    request: bytes
    timeout: float | None  # the time the caller's deadline left when the call arrived


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class StandInServicer:
    """Both services over one `TFServingStandIn`'s models."""

    def __init__(self, standin: TFServingStandIn) -> None:
        self.standin = standin
        self.seen: list[SeenCall] = []
        self.cancelled: list[str] = []  # the methods of calls cancelled while being answered

    def _seen(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        if self.standin.record:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            self.seen.append(
                SeenCall(method, metadata, request.SerializeToString(), context.time_remaining())
            )

    def _model(self, spec: apis.ModelSpec) -> tuple[str, StandInModel]:
        model = self.standin.models.get(spec.name)
        if model is None:
            raise _Abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )
        return spec.name, model

    def _version(self, spec: apis.ModelSpec) -> tuple[str, int, StandInVersion]:
        name, model = self._model(spec)
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            if spec.version_label not in model.labels:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label}",
                )
            version = model.labels[spec.version_label]
        elif choice == "version":
            version = spec.version.value
        else:
            available = model.available()
            if not available:
                raise _Abort(
                    grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})"
                )
            version = available[-1]
        served = model.served.get(version)
        if served is None or served.state != AVAILABLE:
            raise _Abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({name}, {version})",
            )
        return name, version, served

    async def _answer(
        self,
        method: str,
        request: Any,
        context: grpc.aio.ServicerContext,
        answer: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        self._seen(method, request, context)
        try:
            if self.standin.delay_seconds:
                await asyncio.sleep(self.standin.delay_seconds)
            return await answer(request)
        except asyncio.CancelledError:
            self.cancelled.append(method)
            raise
        except _Abort as exc:
            await context.abort(exc.code, exc.message)

    async def _slow(self, served: StandInVersion) -> None:
        if served.delay_seconds:
            await asyncio.sleep(served.delay_seconds)

    @staticmethod
    def _spec(name: str, version: int, signature: str) -> apis.ModelSpec:
        return apis.ModelSpec(
            name=name,
            version=wrappers_pb2.Int64Value(value=version),
            signature_name=signature or "serving_default",
        )

    async def Predict(self, request: apis.PredictRequest, context: Any) -> apis.PredictResponse:
        async def answer(request: apis.PredictRequest) -> apis.PredictResponse:
            name, version, served = self._version(request.model_spec)
            await self._slow(served)
            if "x" not in request.inputs:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "input tensor alias not found in signature: "
                    f"{', '.join(sorted(request.inputs))}. Inputs expected to be in the "
                    "set {x}.",
                )
            x = request.inputs["x"]
            if len(x.tensor_shape.dim) > 254:  # TensorShape's limit: Tensor::FromProto fails
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")
            values = [served.slope * v + served.intercept for v in _floats(x)]
            y = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_shape=x.tensor_shape, float_val=values
            )
            return apis.PredictResponse(
                model_spec=self._spec(name, version, request.model_spec.signature_name),
                outputs={"y": y},
            )

        return await self._answer("Predict", request, context, answer)

    def _examples(self, request: Any) -> list[float]:
        kind = request.input.WhichOneof("kind")
        if kind is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
        inputs = getattr(request.input, kind)
        context = inputs.context.features.feature if kind == "example_list_with_context" else {}
        xs = []
        for example in inputs.examples:
            feature = example.features.feature.get("x") or context.get("x")
            if feature is None or not feature.float_list.value:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Feature: x (data type: float) is required but could not be found.",
                )
            xs.append(feature.float_list.value[0])
        return xs

    async def Classify(self, request: apis.ClassificationRequest, context: Any) -> Any:
        async def answer(request: apis.ClassificationRequest) -> apis.ClassificationResponse:
            name, version, served = self._version(request.model_spec)
            await self._slow(served)
            result = apis.ClassificationResult(
                classifications=[
                    apis.Classifications(classes=[apis.Class(label="", score=served.apply(x))])
                    for x in self._examples(request)
                ]
            )
            return apis.ClassificationResponse(
                model_spec=self._spec(name, version, request.model_spec.signature_name),
                result=result,
            )

        return await self._answer("Classify", request, context, answer)

    async def Regress(self, request: apis.RegressionRequest, context: Any) -> Any:
        async def answer(request: apis.RegressionRequest) -> apis.RegressionResponse:
            name, version, served = self._version(request.model_spec)
            await self._slow(served)
            result = apis.RegressionResult(
                regressions=[
                    apis.Regression(value=served.apply(x)) for x in self._examples(request)
                ]
            )
            return apis.RegressionResponse(
                model_spec=self._spec(name, version, request.model_spec.signature_name),
                result=result,
            )

        return await self._answer("Regress", request, context, answer)

    async def MultiInference(self, request: apis.MultiInferenceRequest, context: Any) -> Any:
        async def answer(request: apis.MultiInferenceRequest) -> apis.MultiInferenceResponse:
            tasks = request.tasks
            name, version, served = self._version(
                tasks[0].model_spec if tasks else apis.ModelSpec()
            )
            await self._slow(served)
            signatures: set[str] = set()
            for task in tasks:
                if not task.model_spec.name:
                    raise _Abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "Found ModelSpec with an empty model name.",
                    )
                if task.model_spec.name != name:
                    raise _Abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "All ModelSpecs in a MultiInferenceRequest must access the same "
                        "model name.",
                    )
                signature = task.model_spec.signature_name or "serving_default"
                if signature in signatures:
                    raise _Abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Duplicate evaluation of signature: {signature}",
                    )
                signatures.add(signature)
                if task.method_name not in (_CLASSIFY, _REGRESS):
                    raise _Abort(
                        grpc.StatusCode.UNIMPLEMENTED,
                        f"Unsupported signature method_name: {task.method_name}",
                    )
            xs = self._examples(request)
            results = []
            for task in tasks:
                spec = self._spec(name, version, task.model_spec.signature_name)
                if task.method_name == _CLASSIFY:
                    classified = apis.ClassificationResult(
                        classifications=[
                            apis.Classifications(
                                classes=[apis.Class(label="", score=served.apply(x))]
                            )
                            for x in xs
                        ]
                    )
                    results.append(
                        apis.InferenceResult(model_spec=spec, classification_result=classified)
                    )
                else:
                    regressed = apis.RegressionResult(
                        regressions=[apis.Regression(value=served.apply(x)) for x in xs]
                    )
                    results.append(
                        apis.InferenceResult(model_spec=spec, regression_result=regressed)
                    )
            return apis.MultiInferenceResponse(results=results)

        return await self._answer("MultiInference", request, context, answer)

    async def GetModelMetadata(self, request: apis.GetModelMetadataRequest, context: Any) -> Any:
        async def answer(request: apis.GetModelMetadataRequest) -> Any:
            if list(request.metadata_field) != ["signature_def"]:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is required"
                )
            name, version, _ = self._version(request.model_spec)
            shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=-1)])
            x = tensor_pb2.TensorInfo(name="x:0", dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
            y = tensor_pb2.TensorInfo(name="y:0", dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
            signature = tensor_pb2.SignatureDef(
                inputs={"x": x}, outputs={"y": y}, method_name="tensorflow/serving/predict"
            )
            packed = any_pb2.Any()
            packed.Pack(apis.SignatureDefMap(signature_def={"serving_default": signature}))
            spec = apis.ModelSpec(name=name, version=wrappers_pb2.Int64Value(value=version))
            return apis.GetModelMetadataResponse(
                model_spec=spec, metadata={"signature_def": packed}
            )

        return await self._answer("GetModelMetadata", request, context, answer)

    async def GetModelStatus(self, request: apis.GetModelStatusRequest, context: Any) -> Any:
        async def answer(request: apis.GetModelStatusRequest) -> apis.GetModelStatusResponse:
            name, model = self._model(request.model_spec)
            spec = request.model_spec
            versions = sorted(model.served, reverse=True)
            if spec.WhichOneof("version_choice") == "version":
                if spec.version.value not in model.served:
                    raise _Abort(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {spec.version.value} of model {name}",
                    )
                versions = [spec.version.value]
            elif spec.WhichOneof("version_choice") == "version_label":
                versions = [self._version(spec)[1]]
            if not versions:
                raise _Abort(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
                )
            return apis.GetModelStatusResponse(
                model_version_status=[
                    apis.ModelVersionStatus(
                        version=v,
                        state=_STATES[model.served[v].state],  # type: ignore[arg-type]
                        status=apis.StatusProto(
                            error_code=_CODES.get(model.served[v].error_code, 2),  # type: ignore[arg-type]
                            error_message=model.served[v].error_message,
                        ),
                    )
                    for v in versions
                ]
            )

        return await self._answer("GetModelStatus", request, context, answer)


def _floats(tensor: tensor_pb2.TensorProto) -> list[float]:
    if tensor.dtype != types_pb2.DT_FLOAT:
        given = types_pb2.DataType.Name(tensor.dtype).removeprefix("DT_").lower()
        raise _Abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"Expects arg[0] to be float but {given} is provided"
        )
    if tensor.tensor_content:
        return list(struct.unpack(f"<{len(tensor.tensor_content) // 4}f", tensor.tensor_content))
    return list(tensor.float_val)


@asynccontextmanager
async def running_grpc_standin(
    standin: TFServingStandIn, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[StandInServicer, str]]:
    """The stand-in's gRPC API served in this event loop; yields its servicer (what it saw) and
    its address (host:port)."""
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    )
    servicer = StandInServicer(standin)
    add_PredictionServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    add_ModelServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    try:
        yield servicer, f"{host}:{bound}"
    finally:
        await server.stop(1)


async def _serve_both(standin: TFServingStandIn, host: str, port: int, grpc_port: int) -> None:
    async with running_standin(standin, host, port), running_grpc_standin(standin, host, grpc_port):
        await asyncio.Event().wait()  # until the process is stopped


def main() -> None:
    parser = standin_arguments("A stand-in for TF Serving's REST and gRPC APIs.")
    parser.add_argument("--grpc-port", type=int, default=8500, help="TF Serving's --port")
    args = parser.parse_args()
    asyncio.run(_serve_both(standin_of(args), args.host, args.port, args.grpc_port))


if __name__ == "__main__":
    main()
