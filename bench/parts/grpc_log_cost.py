"""What the inference log's record of a gRPC Predict costs beside a REST request's: the record
made by the log's own record maker (`SpoolRecordMaker.make`, the work the log does per call off
the request path: the payloads as TF Serving's REST JSON for gRPC, as they came for REST, then
the Avro value and the headers), timed in this process (best of 15 rounds of 2,000 calls, the
calls taking turns, one core). The calls are the benchmark's own: REST's request and nginx's
answer, and the same tensors as a PredictRequest and PredictResponse (bench/parts/grpc_path);
beside them a Predict of 2x2 values of each common dtype. Prints a table, the gRPC record's cost
over REST's per request last.

    python -m bench.parts.grpc_log_cost
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.harness import load
from bench.parts.grpc_path import PREDICTIONS, predict_request, predict_response
from modelserving.tfserving import serving_apis_pb2, tensor_pb2, types_pb2
from modelserving_sidecar.config import LoggingConfig, LoggingMode, ModelIdentity
from modelserving_sidecar.grpc.tensor_json import request_json, response_json
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.log.records import SpoolRecordMaker

REST_RESPONSE = ('{"predictions": ' + str(PREDICTIONS) + "}").encode()
REQUEST_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
REST = "REST record (the benchmark's request)"
GRPC = "gRPC Predict record (the same tensors)"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def per_call_us(
    calls: dict[str, Callable[[], object]], rounds: int = 15, n: int = 2000
) -> dict[str, float]:
    """Each call's best time of `rounds` rounds of `n`, the calls taking turns round by round
    (a machine shared with other work slows them alike, not one of them)."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, fn in calls.items():
            started = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - started) / n)
    return {name: seconds * 1e6 for name, seconds in best.items()}


def exchange(request: bytes, response: bytes, grpc_method: str | None) -> Exchange:
    return Exchange(
        REQUEST_ID,
        received_ms=1_700_000_000_000,
        status=200,
        request_body=request,
        response_body=response,
        model_version=1,
        caller="bench",
        traceparent=TRACEPARENT,
        grpc_method=grpc_method,
    )


def dtype_request(dtype: int, field: str, values: list[object]) -> bytes:
    """A Predict of one [2, n/2] tensor of `dtype`, its values in the typed field."""
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    getattr(tensor, field).extend(values)
    for size in (2, len(values) // 2):
        tensor.tensor_shape.dim.add(size=size)
    request = serving_apis_pb2.PredictRequest()
    request.model_spec.name = load.MODEL
    request.inputs["x"].CopyFrom(tensor)
    return request.SerializeToString()


DTYPES = {
    "float": (types_pb2.DT_FLOAT, "float_val", [0.5, 1.25, 2.0, 3.5]),
    "double": (types_pb2.DT_DOUBLE, "double_val", [0.1, 1.25, 2.0, 3.5]),
    "int32": (types_pb2.DT_INT32, "int_val", [1, 2, 3, 4]),
    "int64": (types_pb2.DT_INT64, "int64_val", [1, 2, 3, 4]),
    "string": (types_pb2.DT_STRING, "string_val", [b"ab", b"cd", b"\xff\x00", b"ef"]),
    "bool": (types_pb2.DT_BOOL, "bool_val", [True, False, True, True]),
}


def figures() -> dict[str, float]:
    """Microseconds per call of each record made, and the gRPC record's over REST's."""
    settings = LoggingConfig(mode=LoggingMode.ALL, topic="bench")
    maker = SpoolRecordMaker(ModelIdentity(load.MODEL, 1, 7), settings, "bench-pod")
    rest = exchange(load.PREDICT_BODY.encode(), REST_RESPONSE, None)
    grpc_request, grpc_response = predict_request(), predict_response()
    grpc = exchange(grpc_request, grpc_response, "Predict")
    calls: dict[str, Callable[[], object]] = {
        REST: lambda: maker.make(rest),
        GRPC: lambda: maker.make(grpc),
        "  of which the request's JSON": lambda: request_json("Predict", grpc_request),
        "  of which the answer's JSON": lambda: response_json("Predict", grpc_response, True),
    }
    for name, (dtype, field, values) in DTYPES.items():
        call = exchange(dtype_request(dtype, field, values), grpc_response, "Predict")
        calls[f"gRPC Predict record, 2x2 {name}"] = lambda c=call: maker.make(c)
    out = per_call_us(calls)
    out["gRPC record over REST's"] = out[GRPC] - out[REST]
    return out


def main() -> None:
    print("inference log record of one call, µs (best of 15 rounds of 2,000):")
    for name, us in figures().items():
        print(f"  {name:44s} {us:8.2f}")


if __name__ == "__main__":
    main()
