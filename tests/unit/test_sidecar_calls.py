"""The steps every call takes, REST or gRPC (`calls`): the credential counted by its outcome, the
version chosen (named, labelled, split by a sticky key in any case, the shadow's copy decided),
the version a call is counted under, the record's version; and through both framings at once,
in one process in front of the TF Serving stand-in: an auth refusal counted alike, a full log
refusing alike, a durable answer leaving only once its record is kept, and a record that cannot
be kept refusing the answer alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.app import REGISTRY, create_app
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.auth.authenticator import READY, AuthHealth
from modelserving_sidecar.calls import (
    LOG_CANNOT_KEEP,
    LOG_FULL,
    Call,
    authenticate,
    choose_version,
    exchange_of,
    served_by,
)
from modelserving_sidecar.config import ShadowConfig, parse_config
from modelserving_sidecar.errors import SidecarError
from modelserving_sidecar.log.exchange import Exchange
from modelserving_sidecar.main import grpc_port, serving
from modelserving_sidecar.metrics import SidecarMetrics
from modelserving_sidecar.model.state import AVAILABLE, ModelState, ModelStatus, VersionStatus
from modelserving_sidecar.routing.router import Router
from modelserving_sidecar.routing.shadow import ShadowSender
from modelserving_sidecar.routing.split import (
    Routing,
    ShadowVersion,
    SplitTable,
    StickyBy,
    WeightedVersion,
)
from tests.support.ports import free_port
from tests.support.recording_log import RecordingLog
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.tfserving_standin_grpc import running_grpc_standin

MODEL = "half_plus_two"
KEY = "calls-test-key"

# ---------------------------------------------------------------- the steps, one by one


class Outcomes:
    """An authenticator whose word is given by the credential: `ok`, or the refusal's code."""

    mode = "apiKey"

    async def authenticate(self, authorization: str | None) -> str | None:
        if authorization == "ok":
            return "team-a"
        raise SidecarError(int(authorization or 401), "refused")

    def health(self) -> AuthHealth:
        return READY


async def test_the_credential_is_counted_by_its_outcome_and_a_refusal_passed_on() -> None:
    registry = CollectorRegistry()
    metrics = SidecarMetrics(registry)
    assert await authenticate(Outcomes(), metrics, "ok") == "team-a"
    for code in ("401", "401", "403", "503"):
        with pytest.raises(SidecarError) as refused:
            await authenticate(Outcomes(), metrics, code)
        assert refused.value.status == int(code)
    counted = {
        result: registry.get_sample_value(
            "modelserving_sidecar_auth_results_total", {"mode": "apiKey", "result": result}
        )
        for result in ("allowed", "unauthenticated", "forbidden", "error")
    }
    assert counted == {"allowed": 1, "unauthenticated": 2, "forbidden": 1, "error": 1}


def table(routing: Routing, available: tuple[int, ...] = (1, 2, 3)) -> SplitTable:
    router = Router("m", routing)
    status = ModelStatus(tuple(VersionStatus(v, AVAILABLE) for v in available))
    router.model_state_changed(ModelState.of(status, 1.0))
    return router.table


TWO = (WeightedVersion(1, 50, ("stable",)), WeightedVersion(2, 50, ("canary",)))


def shadows() -> ShadowSender:
    return ShadowSender.__new__(ShadowSender)  # what choose_version asks of it: never sent


def test_a_named_version_or_known_label_wins_over_the_split_and_is_not_copied() -> None:
    split = table(Routing(TWO, ShadowVersion(3, 100)))
    call = Call("rid")
    named = choose_version(call, split, "m", 2, None, {}, shadows())
    assert named is not None and (named.version, named.known, call.shadow) == (2, True, None)
    other = choose_version(call, split, "m", 9, None, {}, shadows())
    assert other is not None and (other.version, other.known) == (9, False)
    labelled = choose_version(call, split, "m", None, "canary", {}, shadows())
    assert labelled is split.by_version[2] and call.shadow is None
    assert choose_version(call, split, "m", None, "nobody-knows", {}, shadows()) is None


def test_the_split_follows_the_sticky_header_in_any_case_over_either_protocol() -> None:
    sticky = table(Routing(TWO, sticky_by=StickyBy.HEADER, sticky_header="X-Session-Id"))
    for session in (f"session-{i}" for i in range(20)):
        rest = CIMultiDictProxy(CIMultiDict({"X-SESSION-ID": session}))
        grpc_metadata = {"x-session-id": session}  # gRPC's keys are lower case
        chosen = {
            choose_version(Call(f"rid-{n}"), sticky, "m", None, None, headers, None)
            for n, headers in enumerate([rest, grpc_metadata] * 3)
        }
        assert len(chosen) == 1, f"{session} went to {chosen}"
    spread = {
        choose_version(Call(f"rid-{n}"), sticky, "m", None, None, {}, None) for n in range(50)
    }
    assert len(spread) == 2  # no header: by the request id


def test_the_split_follows_the_caller_when_sticky_by_caller() -> None:
    sticky = table(Routing(TWO, sticky_by=StickyBy.CALLER))
    calls = [Call(f"rid-{n}") for n in range(20)]
    for call in calls:
        call.caller = "team-a"
    assert len({choose_version(c, sticky, "m", None, None, {}, None) for c in calls}) == 1


def test_only_a_call_the_split_serves_is_copied_and_an_unavailable_shadow_is_counted() -> None:
    split = table(Routing(TWO, ShadowVersion(3, 100)))
    call = Call("rid")
    choose_version(call, split, "m", None, None, {}, shadows())
    assert call.shadow is split.by_version[3]
    never_copied = Call("rid")
    choose_version(never_copied, split, "m", None, None, {}, None)
    assert never_copied.shadow is None
    registry = CollectorRegistry()
    counted = ShadowSender(None, None, ShadowConfig(), SidecarMetrics(registry))  # type: ignore[arg-type]
    down = table(Routing(TWO, ShadowVersion(3, 100)), available=(1, 2))
    unavailable = Call("rid")
    choose_version(unavailable, down, "m", None, None, {}, counted)
    assert unavailable.shadow is None
    dropped = "modelserving_sidecar_shadow_dropped_total"
    assert registry.get_sample_value(dropped, {"reason": "unavailable"}) == 1


def test_a_call_counts_under_a_known_version_answered_or_not_else_only_when_answered() -> None:
    split = table(Routing(TWO))
    known, other = split.by_version[1], split.version("m", 9)
    assert [served_by(known, True), served_by(known, False)] == ["1", "1"]
    assert [served_by(other, True), served_by(other, False)] == ["9", ""]
    assert [served_by(None, True), served_by(None, False)] == ["", ""]


def test_the_record_takes_the_version_the_call_went_to_else_the_first_weighted() -> None:
    split = table(Routing(TWO))
    call = Call("rid")
    call.caller, call.request_body = "team-a", b"{}"
    unrouted = exchange_of(call, 401, b"no", "00-trace", split.default)
    assert (unrouted.model_version, unrouted.role, unrouted.grpc_method) == (1, "stable", None)
    call.version = split.by_version[2]
    routed = exchange_of(call, 200, b"yes", None, split.default, "Predict")
    assert routed == Exchange(
        request_id="rid",
        received_ms=call.received_ms,
        status=200,
        request_body=b"{}",
        response_body=b"yes",
        model_version=2,
        caller="team-a",
        traceparent=None,
        role="canary",
        grpc_method="Predict",
    )


# ---------------------------------------------------------------- both framings, alike


@dataclass
class Sidecar:
    """One sidecar's two doors, and what its refusals said, in order."""

    rest: str  # the :predict URL
    stub: PredictionServiceStub  # gRPC's
    http: aiohttp.ClientSession
    log: RecordingLog
    registry: CollectorRegistry
    errors: list[str] = field(default_factory=list)

    async def predict_rest(self, key: str) -> int:
        headers = {"Authorization": f"ApiKey {key}"}
        async with self.http.post(self.rest, json={"instances": [1.0]}, headers=headers) as got:
            body = await got.json()
        if got.status != 200:
            self.errors.append(body["error"])
        return got.status

    async def predict_grpc(self, key: str) -> grpc.StatusCode:
        request = apis.PredictRequest(
            model_spec=apis.ModelSpec(name=MODEL),
            inputs={"x": tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])},
        )
        try:
            await self.stub.Predict(request, metadata=(("authorization", f"ApiKey {key}"),))
        except grpc.aio.AioRpcError as exc:
            self.errors.append(exc.details() or "")
            return exc.code()
        return grpc.StatusCode.OK

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"modelserving_sidecar_{name}", labels) or 0


@asynccontextmanager
async def sidecar(
    tmp_path: Path, log: RecordingLog | None = None, **logging: str
) -> AsyncIterator[Sidecar]:
    """REST and gRPC of one sidecar (API keys, the log given) before the stand-in."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    standin = TFServingStandIn()
    log = log if log is not None else RecordingLog()
    async with (
        running_standin(standin) as (_, rest_url),
        running_grpc_standin(standin) as (_, direct),
    ):
        config = parse_config(
            {
                "serving": {"name": "hpt", "namespace": "demo"},
                "model": {"name": MODEL, "version": 1, "modelId": 17},
                "upstream": {"url": rest_url, "timeoutSeconds": 10},
                "grpc": {"port": free_port(), "upstream": direct},
                "auth": {"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
                "logging": logging,
            }
        )
        app = create_app(config, inference_log=log.factory())
        async with (
            serving(app) as url,
            grpc_port(app, config, 1) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            aiohttp.ClientSession() as http,
        ):
            yield Sidecar(
                f"{url}/v1/models/{MODEL}:predict",
                PredictionServiceStub(channel),
                http,
                log,
                app[REGISTRY],
            )


async def test_rest_and_grpc_count_an_auth_refusal_alike(tmp_path: Path) -> None:
    async with sidecar(tmp_path) as both:
        assert await both.predict_rest("not-the-key") == 401
        assert await both.predict_grpc("not-the-key") is grpc.StatusCode.UNAUTHENTICATED
        assert await both.predict_rest(KEY) == 200
        assert await both.predict_grpc(KEY) is grpc.StatusCode.OK
        refused = both.count("auth_results_total", mode="apiKey", result="unauthenticated")
        allowed = both.count("auth_results_total", mode="apiKey", result="allowed")
        rest_401 = both.count("requests_total", route="predict", code="401", version="")
        grpc_401 = both.count("requests_total", route="grpc_predict", code="401", version="")
    assert (refused, allowed, rest_401, grpc_401) == (2, 2, 1, 1)
    # Refused credentials are not logged, over either protocol.
    assert [e.grpc_method for e in both.log.exchanges] == [None, "Predict"]


async def test_a_full_log_turns_calls_away_alike(tmp_path: Path) -> None:
    log = RecordingLog()
    log.full = True
    async with sidecar(tmp_path, log) as both:
        assert await both.predict_rest(KEY) == 503
        assert await both.predict_grpc(KEY) is grpc.StatusCode.UNAVAILABLE
    assert both.errors == [LOG_FULL, LOG_FULL]
    assert log.exchanges == []


async def test_a_record_that_cannot_be_kept_refuses_the_answer_alike(tmp_path: Path) -> None:
    log = RecordingLog()
    log.keeps = False
    async with sidecar(tmp_path, log, durability="spooled") as both:
        assert await both.predict_rest(KEY) == 503
        assert await both.predict_grpc(KEY) is grpc.StatusCode.UNAVAILABLE
        rest_503 = both.count("requests_total", route="predict", code="503", version="1")
        grpc_503 = both.count("requests_total", route="grpc_predict", code="503", version="1")
    assert both.errors == [LOG_CANNOT_KEEP, LOG_CANNOT_KEEP]
    assert (rest_503, grpc_503) == (1, 1)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
async def test_a_durable_answer_leaves_only_once_its_record_is_kept(
    tmp_path: Path, protocol: str
) -> None:
    log = RecordingLog()
    log.written = written = asyncio.Event()
    async with sidecar(tmp_path, log, durability="spooled") as both:
        predict = both.predict_rest if protocol == "rest" else both.predict_grpc
        answer = asyncio.create_task(predict(KEY))
        await asyncio.wait_for(log.awaited.wait(), 10)  # the record is handed to the spool
        assert not answer.done(), "answered before its record was written"
        assert log.exchanges == []
        written.set()
        assert await answer in (200, grpc.StatusCode.OK)
    assert [e.grpc_method for e in log.exchanges] == [None if protocol == "rest" else "Predict"]
