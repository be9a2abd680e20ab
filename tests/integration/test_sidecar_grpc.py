"""TF Serving's gRPC API through the real sidecar process (uvloop, as in a pod), with a grpcio
client written as users write one, the TF Serving stand-in's gRPC API behind it and the
inference log on the real broker: the stand-in's answers byte for byte, the same refusals as
REST with nothing forwarded or logged, the message size limit, a record equal to the REST
call's, a version label resolved by the sidecar, and gRPC's standard health check."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import (
    HEADER_CALLER,
    HEADER_PROTOCOL,
    HEADER_REQUEST_ID,
    HEADER_TRACEPARENT,
)
from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving.example_pb2 import Example, Feature, Features, FloatList
from modelserving.tfserving.serving_apis_pb2_grpc import ModelServiceStub, PredictionServiceStub
from tests.support.grpc_sidecars import (
    CLIENT_OPTIONS,
    GOOD,
    KEY,
    LIMIT,
    MODEL,
    grpc_sidecar,
    log_all,
    predict_request,
)
from tests.support.kube_callers import grant_predict, service_account_token
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
)
from tests.support.waiting import wait_for_async


def examples(*xs: float) -> apis.Input:
    return apis.Input(
        example_list=apis.ExampleList(
            examples=[
                Example(features=Features(feature={"x": Feature(float_list=FloatList(value=[x]))}))
                for x in xs
            ]
        )
    )


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def multi_inference(given: apis.Input, *specs: dict[str, Any]) -> apis.MultiInferenceRequest:
    """A classify task, then regress tasks (each with its own signature), on one input."""
    tasks = [
        apis.InferenceTask(
            model_spec=apis.ModelSpec(signature_name=f"task_{i}" if i else "", **spec),
            method_name=CLASSIFY if i == 0 else REGRESS,
        )
        for i, spec in enumerate(specs)
    ]
    return apis.MultiInferenceRequest(tasks=tasks, input=given)


async def records(topic: str, bootstrap: str, expected: int) -> list[Any]:
    found: list[Any] = []

    async def there() -> bool:
        found[:] = [
            r
            async for r in read_inference_log(
                topic, bootstrap, InferenceLogQuery(from_beginning=True)
            )
        ]
        return len(found) >= expected

    await wait_for_async(there, timeout=60, what=f"{expected} records on {topic}", interval=0.5)
    return found


async def test_every_method_through_the_sidecar_answers_what_the_standin_answers_byte_for_byte(
    tmp_path,
):
    calls = [
        ("Predict", predict_request([1.0, 2.0, 5.0])),
        ("Predict", predict_request([1.0, 2.0], packed=True, signature_name="serving_default")),
        (
            "Classify",
            apis.ClassificationRequest(
                model_spec=apis.ModelSpec(name=MODEL), input=examples(1.0, 3.0)
            ),
        ),
        (
            "Regress",
            apis.RegressionRequest(model_spec=apis.ModelSpec(name=MODEL), input=examples(4.0)),
        ),
        (
            "GetModelMetadata",
            apis.GetModelMetadataRequest(
                model_spec=apis.ModelSpec(name=MODEL), metadata_field=["signature_def"]
            ),
        ),
        ("GetModelStatus", apis.GetModelStatusRequest(model_spec=apis.ModelSpec(name=MODEL))),
        ("MultiInference", multi_inference(examples(1.0, 3.0), {"name": MODEL}, {"name": MODEL})),
    ]
    async with (
        grpc_sidecar(tmp_path) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as through,
        grpc.aio.insecure_channel(setup.direct, options=CLIENT_OPTIONS) as direct,
    ):
        for name, request in calls:
            stubs = [
                ModelServiceStub(c) if name == "GetModelStatus" else PredictionServiceStub(c)
                for c in (through, direct)
            ]
            call = getattr(stubs[0], name)(request, metadata=GOOD, timeout=5)
            answer = await call
            expected = await getattr(stubs[1], name)(request, timeout=10)
            assert answer.SerializeToString() == expected.SerializeToString(), name
            assert answer == expected
            initial = dict(await call.initial_metadata())
            assert initial["x-request-id"]
            if name != "GetModelStatus":
                assert initial.get("x-model-version") in (None, "1")
        # The stand-in's own errors come through as they are, code and message.
        missing = predict_request([1.0], version=wrappers_pb2.Int64Value(value=9))
        with pytest.raises(grpc.aio.AioRpcError) as through_error:
            await PredictionServiceStub(through).Predict(missing, metadata=GOOD, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as direct_error:
            await PredictionServiceStub(direct).Predict(missing, timeout=10)
        # A call without a deadline gets the sidecar's upstream.timeoutSeconds (10 s).
        await PredictionServiceStub(through).Predict(predict_request([1.0]), metadata=GOOD)
        unbounded = setup.servicer.seen.pop()
    assert through_error.value.code() == direct_error.value.code() == grpc.StatusCode.NOT_FOUND
    assert through_error.value.details() == direct_error.value.details()
    # A failure's request id comes with its status, as trailing metadata: nothing was sent
    # before it (the call was not committed, so a client's retry policy could retry it).
    trailing = dict(through_error.value.trailing_metadata() or ())
    assert trailing["x-request-id"] and trailing["traceparent"]
    assert "x-request-id" not in dict(through_error.value.initial_metadata() or ())
    # Every forwarded call carried its request id; the credential stayed in the sidecar.
    forwarded = [seen for seen in setup.servicer.seen if "x-request-id" in seen.metadata]
    assert len(forwarded) == len(calls) + 1
    assert not any("authorization" in seen.metadata for seen in setup.servicer.seen)
    # The caller's deadline (5 s) went on with the call, less what the sidecar spent (gRPC
    # rounds a deadline up to its wire format's precision: 0.2 s is the slack allowed).
    assert all(seen.timeout is not None and seen.timeout <= 5.2 for seen in forwarded)
    assert unbounded.timeout is not None and 5.2 < unbounded.timeout <= 10.2
    # All of it on the sidecar's uvloop event loop, as in a pod.
    assert "event loop: uvloop" in (tmp_path / "sidecar.log").read_text()


async def test_no_credential_or_a_wrong_key_gets_the_rest_codes_meaning_and_nothing_is_forwarded_or_logged(  # noqa: E501
    local_env, topic, tmp_path
):
    logging = log_all(local_env, topic, tmp_path)
    request = predict_request([1.0])
    async with (
        grpc_sidecar(tmp_path, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        aiohttp.ClientSession() as http,
    ):
        stub = PredictionServiceStub(channel)
        codes = []
        for metadata in (
            (),
            (("authorization", "ApiKey not-the-key"),),
            (("authorization", "Basic dXNlcjpwYXNz"),),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(request, metadata=metadata, timeout=10)
            codes.append(refused.value.code())
            async with http.post(
                f"{setup.sidecar.url}/v1/models/{MODEL}:predict",
                json={"instances": [1.0]},
                headers=dict(metadata),
            ) as resp:
                assert resp.status == 401
        with pytest.raises(grpc.aio.AioRpcError) as other_model:
            await stub.Predict(
                apis.PredictRequest(model_spec=apis.ModelSpec(name="other")),
                metadata=GOOD,
                timeout=10,
            )
        assert setup.servicer.seen == []
        answer = await stub.Predict(request, metadata=GOOD, timeout=10)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert other_model.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(answer.outputs["y"].float_val) == [2.5]
    # One record: the authorized call's; neither refusals nor the other model's call.
    logged = await records(topic, local_env.kafka_bootstrap, 1)
    assert [r.headers[HEADER_CALLER] for r in logged] == ["team-a"]


async def test_a_6_mb_request_passes_and_one_over_the_limit_is_resource_exhausted(tmp_path):
    six_mb = [float(i % 1000) for i in range(6 * 1024 * 1024 // 4)]
    over = [0.5] * (LIMIT // 4 + 1024)
    async with (
        grpc_sidecar(tmp_path) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        stub = PredictionServiceStub(channel)
        answer = await stub.Predict(predict_request(six_mb, packed=True), metadata=GOOD, timeout=60)
        assert len(answer.outputs["y"].float_val) == len(six_mb)
        assert answer.outputs["y"].float_val[999] == 0.5 * 999 + 2
        seen_before = len(setup.servicer.seen)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Predict(predict_request(over, packed=True), metadata=GOOD, timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(setup.servicer.seen) == seen_before


# spooled: the answer leaves once its record is in the spool file, over gRPC as over REST.
@pytest.mark.parametrize("durability", ["buffered", "spooled"])
async def test_the_record_of_a_grpc_predict_equals_the_record_of_the_rest_call_with_the_same_input(
    local_env, topic, tmp_path, durability
):
    logging = log_all(local_env, topic, tmp_path) | {
        "durability": durability,
    }
    async with (
        grpc_sidecar(tmp_path, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        aiohttp.ClientSession() as http,
    ):
        call = PredictionServiceStub(channel).Predict(
            predict_request([1.0, 2.0, 0.1], packed=True), metadata=GOOD, timeout=10
        )
        await call
        answered = dict(await call.initial_metadata())
        grpc_id, grpc_trace = answered["x-request-id"], answered["traceparent"]
        async with http.post(
            f"{setup.sidecar.url}/v1/models/{MODEL}:predict",
            json={"inputs": {"x": [1.0, 2.0, 0.1]}},
            headers={"Authorization": f"ApiKey {KEY}"},
        ) as resp:
            assert resp.status == 200
            rest_id, rest_trace = resp.headers["X-Request-Id"], resp.headers["traceparent"]
    logged = {r.key: r for r in await records(topic, local_env.kafka_bootstrap, 2)}
    over_grpc, over_rest = logged[grpc_id], logged[rest_id]
    assert (over_grpc.headers[HEADER_PROTOCOL], over_rest.headers[HEADER_PROTOCOL]) == (
        "grpc",
        "rest",
    )
    fields = (
        "model_id",
        "model_name",
        "model_version",
        "response_http_code",
        "inference_request",
        "inference_response",
    )
    assert {f: getattr(over_grpc.record, f) for f in fields} == {
        f: getattr(over_rest.record, f) for f in fields
    }
    assert over_grpc.record.inference_request == '{"inputs": {"x": [1.0, 2.0, 0.1]}}'
    # Each call's own: its request id, and the trace the sidecar started for it (the caller
    # sent none), which its answer names too.
    own = {HEADER_REQUEST_ID, HEADER_PROTOCOL, HEADER_TRACEPARENT}
    same_headers = set(over_grpc.headers) - own
    assert {h: over_grpc.headers[h] for h in same_headers} == {
        h: over_rest.headers[h] for h in same_headers
    }
    assert (over_grpc.headers[HEADER_TRACEPARENT], over_rest.headers[HEADER_TRACEPARENT]) == (
        grpc_trace,
        rest_trace,
    )
    assert grpc_trace.split("-")[1] != rest_trace.split("-")[1]


# An input over the log's maxPayloadBytes: cut, or replaced by its digest, the same way whichever
# protocol it came by (the gRPC message's REST JSON is written only as far as the cut needs).
@pytest.mark.parametrize("oversize", ["truncate", "digest"])
async def test_an_oversize_grpc_predict_is_recorded_as_the_rest_call_with_the_same_input(
    local_env, topic, tmp_path, oversize
):
    logging = log_all(local_env, topic, tmp_path) | {
        "maxPayloadBytes": 20_000,
        "oversizePayload": oversize,
    }
    values = [i * 0.25 for i in range(30_000)]  # 120 kB packed, 220 kB as JSON
    async with (
        grpc_sidecar(tmp_path, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        aiohttp.ClientSession() as http,
    ):
        call = PredictionServiceStub(channel).Predict(
            predict_request(values, packed=True), metadata=GOOD, timeout=30
        )
        await call
        grpc_id = dict(await call.initial_metadata())["x-request-id"]
        async with http.post(
            f"{setup.sidecar.url}/v1/models/{MODEL}:predict",
            json={"inputs": {"x": values}},
            headers={"Authorization": f"ApiKey {KEY}"},
        ) as resp:
            assert resp.status == 200
            rest_id = resp.headers["X-Request-Id"]
    logged = {r.key: r for r in await records(topic, local_env.kafka_bootstrap, 2)}
    over_grpc, over_rest = logged[grpc_id], logged[rest_id]
    assert over_grpc.record.inference_request == over_rest.record.inference_request
    assert over_grpc.record.inference_response == over_rest.record.inference_response
    mark = "cut" if oversize == "truncate" else "digest"
    assert over_grpc.headers["payload"] == f"request={mark},response={mark}"
    assert over_rest.headers["payload"] == over_grpc.headers["payload"]
    if oversize == "truncate":
        assert len(over_grpc.record.inference_request) == 20_000
        assert over_grpc.record.inference_request.startswith('{"inputs": {"x": [0.0, 0.25, 0.5, ')
    else:
        assert set(json.loads(over_grpc.record.inference_request)) == {"bytes", "sha256"}


async def test_a_version_label_and_the_split_choose_the_version_over_grpc(tmp_path):
    models = {
        MODEL: StandInModel(
            {
                1: StandInVersion(slope=0.0, intercept=1.0),
                2: StandInVersion(slope=0.0, intercept=2.0),
            }
        )
    }
    routing = {
        "versions": [
            {"version": 1, "weight": 100, "labels": ["stable"]},
            {"version": 2, "weight": 0, "labels": ["canary"]},
        ]
    }
    async with (
        grpc_sidecar(tmp_path, models=models, routing=routing) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        stub = PredictionServiceStub(channel)

        async def answered_by(**spec: Any) -> tuple[int, float, str]:
            call = stub.Predict(predict_request([0.0], **spec), metadata=GOOD, timeout=10)
            answer = await call
            header = dict(await call.initial_metadata())["x-model-version"]
            return answer.model_spec.version.value, answer.outputs["y"].float_val[0], header

        # The sidecar knows both versions AVAILABLE once it has asked TF Serving.
        await wait_for_async(
            lambda: _answers(answered_by, 1), timeout=30, what="the stable version to answer"
        )
        assert await answered_by(version_label="canary") == (2, 2.0, "2")
        assert await answered_by(version_label="stable") == (1, 1.0, "1")
        assert await answered_by() == (1, 1.0, "1")
        assert await answered_by(version=wrappers_pb2.Int64Value(value=2)) == (2, 2.0, "2")
    # TF Serving was asked for the version numbers; it knows no labels.
    asked = [apis.PredictRequest.FromString(s.request).model_spec for s in setup.servicer.seen]
    assert all(spec.WhichOneof("version_choice") == "version" for spec in asked)


async def _answers(answered_by: Any, version: int) -> bool:
    return (await answered_by())[0] == version


async def test_a_deadline_the_caller_gives_up_on_cancels_the_call_to_tf_serving(
    local_env, topic, tmp_path
):
    logging = log_all(local_env, topic, tmp_path)
    models = {MODEL: StandInModel({1: StandInVersion(delay_seconds=30)})}

    def with_id(request_id: str) -> tuple[tuple[str, str], ...]:
        return (*GOOD, ("x-request-id", request_id))

    async with (
        grpc_sidecar(tmp_path, models=models, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        stub = PredictionServiceStub(channel)
        servicer = setup.servicer

        async def cancelled(n: int) -> bool:
            return servicer.cancelled == ["Predict"] * n

        async def arrived(n: int) -> bool:
            return len(servicer.seen) == n

        with pytest.raises(grpc.aio.AioRpcError) as gave_up:
            await stub.Predict(predict_request([1.0]), metadata=with_id("late"), timeout=1)
        assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # TF Serving's call ends with it, not left to run its 30 s.
        await wait_for_async(lambda: cancelled(1), timeout=10, what="the call to be cancelled")
        # A call the caller cancels is cancelled at TF Serving too, and has no record: nobody
        # got an answer.
        call = stub.Predict(predict_request([2.0]), metadata=with_id("given-up"))
        await wait_for_async(lambda: arrived(2), timeout=10, what="the call at the stand-in")
        call.cancel()
        await wait_for_async(lambda: cancelled(2), timeout=10, what="the call to be cancelled")
        models[MODEL].served[1].delay_seconds = 0
        answer = await stub.Predict(
            predict_request([3.0]), metadata=with_id("answered"), timeout=10
        )
    assert answer.outputs["y"].float_val[0] == 3.5
    logged: dict[str, Any] = {}

    async def answered_logged() -> bool:
        async for r in read_inference_log(
            topic, local_env.kafka_bootstrap, InferenceLogQuery(from_beginning=True)
        ):
            logged[r.key] = r
        return "answered" in logged

    await wait_for_async(answered_logged, timeout=60, what="the answered call's record")
    assert logged["answered"].record.response_http_code == 200
    assert "given-up" not in logged
    # The late call: a 504 when the sidecar's own deadline for TF Serving fired first.
    assert "late" not in logged or logged["late"].record.response_http_code == 504


async def test_the_shadow_gets_a_copy_of_a_grpc_predict_logged_as_its_own_record(
    local_env, topic, tmp_path
):
    logging = log_all(local_env, topic, tmp_path)
    models = {
        MODEL: StandInModel(
            {
                1: StandInVersion(slope=0.0, intercept=1.0),
                2: StandInVersion(slope=0.0, intercept=2.0),
            }
        )
    }
    routing = {
        "versions": [{"version": 1, "weight": 100}],
        "shadow": {"version": 2, "percent": 100},
    }
    async with (
        grpc_sidecar(tmp_path, models=models, routing=routing, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        stub = PredictionServiceStub(channel)

        async def shadowed() -> bool:  # once the sidecar has seen version 2 AVAILABLE
            metadata = (*GOOD, ("x-request-id", f"call-{len(setup.servicer.seen)}"))
            await stub.Predict(predict_request([0.0]), metadata=metadata, timeout=10)
            return any(
                apis.PredictRequest.FromString(s.request).model_spec.version.value == 2
                for s in setup.servicer.seen
            )

        await wait_for_async(shadowed, timeout=30, what="a copy at the shadow version")
        copied = next(
            s
            for s in setup.servicer.seen
            if apis.PredictRequest.FromString(s.request).model_spec.version.value == 2
        )
        key = copied.metadata["x-request-id"]
        logged: list[Any] = []

        async def both_logged() -> bool:
            logged[:] = [
                r
                async for r in read_inference_log(
                    topic, local_env.kafka_bootstrap, InferenceLogQuery(from_beginning=True)
                )
                if r.key == key
            ]
            return len(logged) == 2

        await wait_for_async(both_logged, timeout=60, what="the call's two records")
    by_role = {r.headers["role"]: r for r in logged}
    assert by_role["stable"].record.model_version == 1
    assert by_role["stable"].record.inference_response == '{"outputs": [1.0]}'
    assert by_role["shadow"].record.model_version == 2
    assert by_role["shadow"].record.inference_response == '{"outputs": [2.0]}'
    assert by_role["shadow"].record.inference_request == by_role["stable"].record.inference_request
    assert {r.headers[HEADER_PROTOCOL] for r in logged} == {"grpc"}


async def test_the_split_and_its_sticky_key_choose_the_same_version_over_grpc_as_over_rest(
    tmp_path,
):
    models = {
        MODEL: StandInModel(
            {
                1: StandInVersion(slope=0.0, intercept=1.0),
                2: StandInVersion(slope=0.0, intercept=2.0),
            }
        )
    }
    routing = {
        "versions": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
        "sticky": {"by": "header", "header": "X-Session-Id"},
    }
    sessions = [f"session-{i}" for i in range(60)]
    async with (
        grpc_sidecar(tmp_path, models=models, routing=routing) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        aiohttp.ClientSession() as http,
    ):
        stub = PredictionServiceStub(channel)

        async def over_grpc(session: str) -> int:
            metadata = (*GOOD, ("x-session-id", session))
            answer = await stub.Predict(predict_request([0.0]), metadata=metadata, timeout=10)
            return int(answer.outputs["y"].float_val[0])

        async def over_rest(session: str) -> int:
            headers = {"Authorization": f"ApiKey {KEY}", "X-Session-Id": session}
            async with http.post(
                f"{setup.sidecar.url}/v1/models/{MODEL}:predict",
                json={"instances": [0.0]},
                headers=headers,
            ) as resp:
                return int((await resp.json())["predictions"][0])

        async def both_available() -> bool:  # the split lends no bucket once both are
            return {await over_grpc(s) for s in sessions} == {1, 2}

        await wait_for_async(both_available, timeout=30, what="both versions in the split")
        by_grpc = {s: await over_grpc(s) for s in sessions}
        by_rest = {s: await over_rest(s) for s in sessions}
    assert by_grpc == by_rest
    assert set(by_grpc.values()) == {1, 2}


async def test_a_token_without_the_rbac_right_is_permission_denied_until_a_role_binding_grants_it(
    local_env, kube_client, namespace, tmp_path
):
    audience = "modelserving-grpc-test"
    token = service_account_token(kube_client, namespace, "grpc-caller", audience)
    auth = {
        "mode": "kubernetes",
        "audience": audience,
        "kubeconfig": local_env.kubeconfig,
        "denyCacheSeconds": 0.5,
    }
    bearer = (("authorization", f"Bearer {token}"),)
    async with (
        grpc_sidecar(tmp_path, auth=auth, namespace=namespace) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
    ):
        stub = PredictionServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Predict(predict_request([1.0]), metadata=bearer, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"system:serviceaccount:{namespace}:grpc-caller" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Predict(
                predict_request([1.0]), metadata=(("authorization", "Bearer x"),), timeout=10
            )
        assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert setup.servicer.seen == []

        grant_predict(kube_client, namespace, "grpc-caller")

        async def allowed() -> bool:
            try:
                answer = await stub.Predict(predict_request([1.0]), metadata=bearer, timeout=10)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                return False
            return list(answer.outputs["y"].float_val) == [2.5]

        await wait_for_async(allowed, timeout=30, what="the RoleBinding to allow the caller")


HEALTHY = health_pb2.HealthCheckResponse.SERVING
UNHEALTHY = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_the_health_check_says_serving_once_tf_serving_has_the_model_available_and_watch_streams_it(  # noqa: E501
    local_env, topic, tmp_path
):
    logging = log_all(local_env, topic, tmp_path)
    models = {MODEL: StandInModel({1: StandInVersion(state="LOADING")})}
    async with (
        grpc_sidecar(tmp_path, models=models, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        aiohttp.ClientSession() as http,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        async def check(service: str) -> Any:
            # No credential: a probe has none, as /readyz needs none.
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            return answer.status

        async def readyz() -> int:
            async with http.get(f"{setup.sidecar.url}/readyz") as resp:
                return resp.status

        assert await check("") == UNHEALTHY
        assert await check("tensorflow.serving.PredictionService") == UNHEALTHY
        assert await readyz() == 503
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await check("tensorflow.serving.SessionService")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == UNHEALTHY
        models[MODEL].served[1].state = "AVAILABLE"
        # The change comes on the stream as soon as the sidecar's next look at TF Serving sees it.
        assert (await asyncio.wait_for(watch.read(), 30)).status == HEALTHY
        assert await check("") == HEALTHY
        assert await check("tensorflow.serving.PredictionService") == HEALTHY
        assert await readyz() == 200
        models[MODEL].served[1].state = "UNLOADING"
        assert (await asyncio.wait_for(watch.read(), 30)).status == UNHEALTHY
        assert await check("") == UNHEALTHY
        models[MODEL].served[1].state = "AVAILABLE"
        assert (await asyncio.wait_for(watch.read(), 30)).status == HEALTHY

        # A service the sidecar does not serve: SERVICE_UNKNOWN on a stream kept open.
        other = health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert (await other.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        assert not other.done()
        other.cancel()

        answer = await PredictionServiceStub(channel).Predict(
            predict_request([1.0]), metadata=GOOD, timeout=10
        )
        assert list(answer.outputs["y"].float_val) == [2.5]
        # SIGTERM: watchers are told NOT_SERVING before the port closes, so they go elsewhere,
        # and their streams end rather than hold the sidecar's stop for its grace period.
        setup.sidecar.process.send_signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 30)).status == UNHEALTHY
        assert await asyncio.wait_for(watch.read(), 30) is grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK
        await asyncio.wait_for(setup.sidecar.process.wait(), 30)
    # Health checks were neither forwarded nor logged: the one record is the Predict's.
    assert [s.method for s in setup.servicer.seen] == ["Predict"]
    logged = await records(topic, local_env.kafka_bootstrap, 1)
    assert len(logged) == 1 and logged[0].headers[HEADER_PROTOCOL] == "grpc"


async def test_a_multi_inference_goes_to_the_version_its_tasks_name_is_refused_when_they_disagree_and_is_logged_once(  # noqa: E501
    local_env, topic, tmp_path
):
    logging = log_all(local_env, topic, tmp_path)
    models = {
        MODEL: StandInModel(
            {
                1: StandInVersion(slope=0.0, intercept=1.0),
                2: StandInVersion(slope=1.0, intercept=0.5),
            }
        )
    }
    routing = {
        "versions": [
            {"version": 1, "weight": 100, "labels": ["stable"]},
            {"version": 2, "weight": 0, "labels": ["canary"]},
        ]
    }
    given = examples(1.0, 3.0)
    async with (
        grpc_sidecar(tmp_path, models=models, routing=routing, logging=logging) as setup,
        grpc.aio.insecure_channel(setup.grpc_address, options=CLIENT_OPTIONS) as channel,
        grpc.aio.insecure_channel(setup.direct, options=CLIENT_OPTIONS) as direct,
    ):
        stub = PredictionServiceStub(channel)

        async def canary_answers() -> bool:  # once the sidecar has seen version 2 AVAILABLE
            request = multi_inference(given, {"name": MODEL, "version_label": "canary"})
            answer = await stub.MultiInference(request, metadata=GOOD, timeout=10)
            return answer.results[0].model_spec.version.value == 2

        await wait_for_async(canary_answers, timeout=30, what="the canary label to be known")
        seen_before = len(setup.servicer.seen)
        # The label on one task takes every task to the canary; TF Serving is asked by number.
        request = multi_inference(
            given, {"name": MODEL, "version_label": "canary"}, {"name": MODEL}
        )
        call = stub.MultiInference(
            request, metadata=(*GOOD, ("x-request-id", "multi-1")), timeout=10
        )
        answer = await call
        assert dict(await call.initial_metadata())["x-model-version"] == "2"
        assert [r.model_spec.version.value for r in answer.results] == [2, 2]
        assert [
            c.classes[0].score for c in answer.results[0].classification_result.classifications
        ] == [1.5, 3.5]
        assert [r.value for r in answer.results[1].regression_result.regressions] == [1.5, 3.5]
        sent = apis.MultiInferenceRequest.FromString(setup.servicer.seen[-1].request)
        assert [t.model_spec.version.value for t in sent.tasks] == [2, 2]
        assert sent.input == given

        # Tasks that disagree: TF Serving's own refusal for two models, the sidecar's for two
        # versions (TF Serving would run the first task's and ignore the second's).
        two_models = multi_inference(given, {"name": MODEL}, {"name": "other"})
        with pytest.raises(grpc.aio.AioRpcError) as through_error:
            await stub.MultiInference(two_models, metadata=GOOD, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as direct_error:
            await PredictionServiceStub(direct).MultiInference(two_models, timeout=10)
        assert through_error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert through_error.value.details() == direct_error.value.details()
        two_versions = multi_inference(
            given,
            {"name": MODEL, "version_label": "canary"},
            {"name": MODEL, "version": wrappers_pb2.Int64Value(value=1)},
        )
        with pytest.raises(grpc.aio.AioRpcError) as disagreeing:
            await stub.MultiInference(two_versions, metadata=GOOD, timeout=10)
        assert disagreeing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "label canary and version 1" in disagreeing.value.details()
        # Neither refusal reached TF Serving (the direct call is the one the stand-in saw).
        assert [s.method for s in setup.servicer.seen[seen_before:]] == ["MultiInference"] * 2
        with pytest.raises(grpc.aio.AioRpcError) as no_credential:
            await stub.MultiInference(request, timeout=10)
        assert no_credential.value.code() == grpc.StatusCode.UNAUTHENTICATED

    logged = {r.key: r for r in await records(topic, local_env.kafka_bootstrap, 2)}
    record = logged["multi-1"]
    assert record.headers[HEADER_PROTOCOL] == "grpc"
    assert record.record.model_version == 2
    assert record.record.response_http_code == 200
    assert json.loads(record.record.inference_request) == {
        "tasks": [
            {"method_name": CLASSIFY},
            {"signature_name": "task_1", "method_name": REGRESS},
        ],
        "examples": [{"x": 1.0}, {"x": 3.0}],
    }
    assert json.loads(record.record.inference_response) == {
        "results": [
            {
                "signature_name": "serving_default",
                "method_name": CLASSIFY,
                "results": [[["", 1.5]], [["", 3.5]]],
            },
            {"signature_name": "task_1", "method_name": REGRESS, "results": [1.5, 3.5]},
        ]
    }
