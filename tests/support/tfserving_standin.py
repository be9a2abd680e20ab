"""A stand-in for TensorFlow Serving's REST API, for tests and the demo: no package registry ships
TF Serving's binary, so this small aiohttp server answers as TF Serving does, per its documented
REST API (https://www.tensorflow.org/tfx/serving/api_rest).

It serves TF Serving's example model `half_plus_two` (y = 0.5 * x + 2) by default: model status
and metadata, versions and labels, :predict in the row ("instances" -> "predictions") and columnar
("inputs" -> "outputs") formats, :classify and :regress, and TF Serving's error codes and
`{"error": "..."}` bodies. A delay can be set to stand for a slow model. It is not TF Serving:
it runs no TensorFlow graph.

    python tests/support/tfserving_standin.py --port 8501 --model half_plus_two
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

JSON = "application/json"
_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|(?P<metadata>/metadata))?"
)


@dataclass
class StandInModel:
    """A model the stand-in serves: y = slope * x + intercept, in these versions."""

    versions: tuple[int, ...] = (1,)
    labels: dict[str, int] = field(default_factory=dict)
    slope: float = 0.5
    intercept: float = 2.0

    def apply(self, value):
        if isinstance(value, list):
            return [self.apply(v) for v in value]
        if isinstance(value, dict):  # a named input: half_plus_two's one input is "x"
            if "x" not in value:
                raise _Bad(
                    "Failed to process element: 0 key: x of 'instances' list. Error: missing"
                )
            return self.apply(value["x"])
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"Expected a number for input x, got {json.dumps(value)}")
        return self.slope * value + self.intercept


class _Bad(Exception):
    """A request TF Serving would answer with 400 and this message."""


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes


class TFServingStandIn:
    """The server's state: its models, its delay, and the requests it saw (for tests)."""

    def __init__(
        self, models: dict[str, StandInModel] | None = None, delay_seconds: float = 0.0
    ) -> None:
        self.models = models if models is not None else {"half_plus_two": StandInModel()}
        self.delay_seconds = delay_seconds
        self.seen: list[SeenRequest] = []
        self.record = True

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.record:
            self.seen.append(
                SeenRequest(request.method, request.path, request.headers.copy(), body)
            )
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        match = _PATH.fullmatch(request.path)
        if match is None:
            return _error(404, f"Malformed request: {request.method} {request.path}")
        model = self.models.get(match["name"])
        if model is None:
            return _error(404, f"Servable not found for request: Latest({match['name']})")
        version = max(model.versions)
        if match["version"] is not None:
            version = int(match["version"])
            if version not in model.versions:
                return _error(
                    404, f"Servable not found for request: Specific({match['name']}, {version})"
                )
        elif match["label"] is not None:
            if match["label"] not in model.labels:
                return _error(404, f"Unrecognized servable version label: {match['label']}")
            version = model.labels[match["label"]]
        if match["verb"]:
            if request.method != "POST":
                return _error(405, f"Method {request.method} not allowed for :{match['verb']}")
            try:
                return _json(200, _infer(model, match["verb"], body))
            except _Bad as exc:
                return _error(400, str(exc))
        if request.method != "GET":
            return _error(405, f"Method {request.method} not allowed")
        if match["metadata"]:
            return _json(200, _metadata(match["name"], version))
        return _json(200, _status(model, match["version"] and version, match["label"] and version))


def _infer(model: StandInModel, verb: str, body: bytes) -> dict:
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise _Bad(f"JSON Parse error: {exc}") from None
    if not isinstance(request, dict):
        raise _Bad("JSON Value: not an object Is not an object")
    if verb == "predict":
        if "instances" in request and "inputs" in request:
            raise _Bad("Not expecting both 'instances' and 'inputs' keys in the request")
        if "instances" in request:
            if not isinstance(request["instances"], list):
                raise _Bad("Excepting 'instances' to be an list/array")
            return {"predictions": model.apply(request["instances"])}
        if "inputs" in request:
            inputs = request["inputs"]
            if isinstance(inputs, dict):
                inputs = inputs.get("x")
                if inputs is None:
                    raise _Bad("Missing named input: x")
            return {"outputs": model.apply(inputs)}
        raise _Bad("Missing 'inputs' or 'instances' key")
    examples = request.get("examples")
    if not isinstance(examples, list):
        raise _Bad("Expected 'examples' to be an array of objects")
    context = request.get("context") or {}
    values = [model.apply({**context, **e} if isinstance(e, dict) else e) for e in examples]
    if verb == "regress":
        return {"results": values}
    return {"results": [[["", v]] for v in values]}


def _status(model: StandInModel, version: int | None, labelled: int | None) -> dict:
    wanted = version or labelled
    versions = [wanted] if wanted else sorted(model.versions, reverse=True)
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }


def _metadata(name: str, version: int) -> dict:
    tensor = {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
    }
    signature = {
        "inputs": {"x": {**tensor, "name": "x:0"}},
        "outputs": {"y": {**tensor, "name": "y:0"}},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
    }


def _json(status: int, data: dict) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type=JSON)


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


@asynccontextmanager
async def running_standin(
    standin: TFServingStandIn | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[TFServingStandIn, str]]:
    """The stand-in served in this event loop; yields it and its base URL."""
    standin = standin or TFServingStandIn()
    runner = web.AppRunner(standin.app(), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses[0]
        yield standin, f"http://{bound[0]}:{bound[1]}"
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in for TF Serving's REST API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--model", action="append", help="a model name to serve (repeatable)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay of every answer")
    args = parser.parse_args()
    models = {name: StandInModel() for name in (args.model or ["half_plus_two"])}
    standin = TFServingStandIn(models, args.delay_ms / 1000)
    standin.record = False
    web.run_app(standin.app(), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
