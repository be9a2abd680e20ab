"""A stand-in for TensorFlow Serving's REST API, for tests and the demo: no package registry ships
TF Serving's binary, so this small aiohttp server answers as TF Serving does, per its documented
REST API (https://www.tensorflow.org/tfx/serving/api_rest) and its source where the docs are
silent (model_servers/get_model_status_impl.cc, http_rest_api_handler.cc).

It serves TF Serving's example model `half_plus_two` (y = 0.5 * x + 2) by default: model status
and metadata, versions and labels, :predict in the row ("instances" -> "predictions") and columnar
("inputs" -> "outputs") formats, :classify and :regress, and TF Serving's error codes and
`{"error": "..."}` bodies. A delay can be set to stand for a slow model. It is not TF Serving:
it runs no TensorFlow graph.

Several versions of a model, each with its own answer (its own slope and intercept, so a test can
tell which version answered) and its own delay. A version can be held in LOADING, made to fail
its load, or made AVAILABLE, and is reported exactly as TF Serving reports it in
`GET /v1/models/<name>` (`model_version_status[]` with `state` and `status.error_code` /
`error_message`, newest version first); a predict on a version that is not AVAILABLE gets TF
Serving's 404 `Servable not found for request: Specific(<name>, <version>)`, an unversioned one
the newest AVAILABLE version (404 `Latest(<name>)` when there is none), and a status GET of a
model with no version at all TF Serving's 404 `Could not find any versions of model <name>`.

Real TF Serving opens its REST and gRPC ports only once it has loaded its models (its ServerCore
loads them before the servers start): until then a connection is refused. A stand-in made
`starting` does the same: its port is taken but refuses connections until `finish_starting()`.

    python tests/support/tfserving_standin.py --port 8501 --model half_plus_two [--versions 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
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


AVAILABLE = "AVAILABLE"
LOADING = "LOADING"
END = "END"
# What TF Serving reports for a version whose SavedModel cannot be read.
LOAD_FAILURE = (
    "NOT_FOUND",
    "Could not find SavedModel .pb or .pbtxt at supplied export directory path: {base}/{version}",
)


@dataclass
class StandInVersion:
    """One version of a model: its answer (y = slope * x + intercept), its delay, and its state
    and load error as TF Serving reports them."""

    slope: float = 0.5
    intercept: float = 2.0
    delay_seconds: float = 0.0
    state: str = AVAILABLE  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""

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


@dataclass
class StandInModel:
    """A model the stand-in serves, in these versions: a tuple of version numbers (each
    half_plus_two) or a mapping of version number to `StandInVersion`."""

    versions: tuple[int, ...] | dict[int, StandInVersion] = (1,)
    labels: dict[str, int] = field(default_factory=dict)
    base_path: str = "/models/half_plus_two"

    def __post_init__(self) -> None:
        if not isinstance(self.versions, dict):
            self.versions = {v: StandInVersion() for v in self.versions}

    @property
    def served(self) -> dict[int, StandInVersion]:
        assert isinstance(self.versions, dict)
        return self.versions

    def hold_loading(self, version: int) -> None:
        """The version is being loaded (again, after a failed load too): reported LOADING with
        status OK, as TF Serving reports a load in progress, not served."""
        self.served[version].state = LOADING
        self.served[version].error_code, self.served[version].error_message = "OK", ""

    def make_available(self, version: int) -> None:
        self.served[version].state = AVAILABLE
        self.served[version].error_code, self.served[version].error_message = "OK", ""

    def fail_load(self, version: int, code: str = "", message: str = "") -> None:
        """The version's load failed: reported END with TF Serving's error, not served."""
        served = self.served[version]
        served.state = END
        served.error_code = code or LOAD_FAILURE[0]
        served.error_message = message or LOAD_FAILURE[1].format(
            base=self.base_path, version=version
        )

    def available(self) -> list[int]:
        return sorted(v for v, s in self.served.items() if s.state == AVAILABLE)


class _Bad(Exception):
    """A request TF Serving would answer with 400 and this message."""


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes


class TFServingStandIn:
    """The server's state: its models, its delay, and the requests it saw (for tests).

    `starting`: its port refuses connections until `finish_starting()`, as TF Serving's until
    its first load is done."""

    def __init__(
        self,
        models: dict[str, StandInModel] | None = None,
        delay_seconds: float = 0.0,
        starting: bool = False,
    ) -> None:
        self.models = models if models is not None else {"half_plus_two": StandInModel()}
        self.delay_seconds = delay_seconds
        self.seen: list[SeenRequest] = []
        self.record = True
        self._started = asyncio.Event()
        self._listening = asyncio.Event()  # set by running_standin
        if not starting:
            self._started.set()

    @property
    def starting(self) -> bool:
        return not self._started.is_set()

    async def started(self) -> None:
        """Returns once the stand-in has been told to finish starting."""
        await self._started.wait()

    async def finish_starting(self) -> None:
        """The first load is done: the port opens; returns once it listens."""
        self._started.set()
        await self._listening.wait()

    @property
    def forwarded(self) -> list[SeenRequest]:
        """The requests a sidecar forwarded for its callers (they carry X-Request-Id; the
        sidecar's own model status polls carry none)."""
        return [seen for seen in self.seen if "X-Request-Id" in seen.headers]

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
        name = match["name"]
        model = self.models.get(name)
        if model is None:
            return _error(404, f"Servable not found for request: Latest({name})")
        versions = model.served
        status_get = request.method == "GET" and not match["verb"] and not match["metadata"]
        version: int | None = None
        if match["version"] is not None:
            version = int(match["version"])
        elif match["label"] is not None:
            if match["label"] not in model.labels:
                return _error(404, f"Unrecognized servable version label: {match['label']}")
            version = model.labels[match["label"]]
        if status_get:
            if version is not None and version not in versions:
                return _error(404, f"Could not find version {version} of model {name}")
            if not versions:
                return _error(404, f"Could not find any versions of model {name}")
            return _json(200, _status(model, version))
        if version is None:
            available = model.available()
            if not available:
                return _error(404, f"Servable not found for request: Latest({name})")
            version = available[-1]
        served = versions.get(version)
        if served is None or served.state != AVAILABLE:
            return _error(404, f"Servable not found for request: Specific({name}, {version})")
        if served.delay_seconds:
            await asyncio.sleep(served.delay_seconds)
        if match["verb"]:
            if request.method != "POST":
                return _error(405, f"Method {request.method} not allowed for :{match['verb']}")
            try:
                return _json(200, _infer(served, match["verb"], body))
            except _Bad as exc:
                return _error(400, str(exc))
        if request.method != "GET":
            return _error(405, f"Method {request.method} not allowed")
        return _json(200, _metadata(name, version))


def _infer(model: StandInVersion, verb: str, body: bytes) -> dict:
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise _Bad(f"JSON Parse error: {exc}") from None
    except RecursionError:  # TF Serving's parser refuses such depth as a parse error too
        raise _Bad("JSON Parse error: The document is nested too deeply") from None
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


def _status(model: StandInModel, version: int | None) -> dict:
    """GetModelStatusResponse as TF Serving's REST prints it: every version newest first (or the
    one asked for), each with its state and status, primitive fields always printed."""
    versions = [version] if version is not None else sorted(model.served, reverse=True)
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": model.served[v].state,
                "status": {
                    "error_code": model.served[v].error_code,
                    "error_message": model.served[v].error_message,
                },
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
    """The stand-in served in this event loop; yields it and its base URL. A starting stand-in
    holds its port bound but not listening (a connection is refused, as by a TF Serving that is
    loading its models) until it finishes starting."""
    standin = standin or TFServingStandIn()
    runner = web.AppRunner(standin.app(), access_log=None, shutdown_timeout=1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    opening: asyncio.Task[None] | None = None
    try:
        sock.bind((host, port))
        bound = sock.getsockname()

        async def open_when_started() -> None:
            await standin.started()
            await web.SockSite(runner, sock).start()  # listens from here on
            standin._listening.set()

        opening = asyncio.create_task(open_when_started(), name="tfserving-standin-start")
        if not standin.starting:
            await opening
        yield standin, f"http://{bound[0]}:{bound[1]}"
    finally:
        standin._listening.clear()
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
        await runner.cleanup()
        sock.close()


def standin_arguments(description: str) -> argparse.ArgumentParser:
    """The command line of a stand-in process (this one, and the gRPC one beside it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--model", action="append", help="a model name to serve (repeatable)")
    parser.add_argument("--versions", default="1", help="the versions served, e.g. 1,2")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay of every answer")
    return parser


def standin_of(args: argparse.Namespace) -> TFServingStandIn:
    """The stand-in a process's command line asks for; it keeps no requests (it runs long)."""
    versions = tuple(int(v) for v in args.versions.split(","))
    models = {name: StandInModel(versions) for name in (args.model or ["half_plus_two"])}
    standin = TFServingStandIn(models, args.delay_ms / 1000)
    standin.record = False
    return standin


def main() -> None:
    args = standin_arguments("A stand-in for TF Serving's REST API.").parse_args()
    web.run_app(standin_of(args).app(), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
