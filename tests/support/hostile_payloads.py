"""Payloads that break naive parsers, shared by the log's unit tests and the sidecar's story with
the real broker: JSON nested past any parser's recursion limit, and a gRPC tensor of more
dimensions than TF Serving takes."""

from __future__ import annotations

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2

POISON = b"[" * 100_000  # the security review's request: parsing it raises RecursionError


def float_tensor(shape: list[int], values: list[float]) -> tensor_pb2.TensorProto:
    dims = [tensor_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_pb2.TensorShapeProto(dim=dims),
        float_val=values,
    )


RANK_1200 = apis.PredictRequest(inputs={"x": float_tensor([1] * 1200, [1.0])}).SerializeToString()
