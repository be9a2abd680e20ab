"""A request's trace, from the caller through the real sidecar process to the TF Serving stand-in
and into its record on the real broker, with spans in a real Jaeger (v2, all in one): a caller's
sampled trace continued with the sidecar's spans, the context TF Serving got naming the span of
the call to it; an unsampled request with no trace context of its own still carries one, and
sends no span; over gRPC, the same through metadata. A Kubernetes token's first check is a
TokenReview in the authenticate span, its second the cache; a sampled call's shadow copy is a
span of its own. A collector that is down changes no answer, and each span it does not get is
counted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from modelserving.inferencelog.record import HEADER_ROLE, HEADER_TRACEPARENT, HEADER_TRACESTATE
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.config import parse_config
from modelserving_sidecar.tracing.context import continued, is_sampled
from tests.support.grpc_sidecars import predict_request
from tests.support.jaeger_queries import all_spans_of, jaeger_trace, parent_of, tags
from tests.support.kube_callers import (
    AUDIENCE,
    SERVING,
    grant_predict,
    service_account_token,
    sidecar,
)
from tests.support.ports import free_port
from tests.support.prometheus import PrometheusServer, Target
from tests.support.sidecar_configs import sidecar_config
from tests.support.sidecar_process import SidecarProcess, running_sidecar
from tests.support.tfserving_standin import (
    StandInModel,
    TFServingStandIn,
    running_standin,
)
from tests.support.tfserving_standin_grpc import running_grpc_standin
from tests.support.waiting import wait_for_async

OPENMETRICS = "application/openmetrics-text; version=1.0.0"

MODEL = "half_plus_two"
KEY = "tracing-test-key"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def traced_config(tmp_path: Path, upstream: str, jaeger, logging: dict[str, Any]) -> dict:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    return sidecar_config(
        upstream,
        auth={"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
        logging=logging,
        tracing={"endpoint": jaeger.otlp_http},  # ratio 0: start no trace of its own
    )


def logged_to(local_env, topic: str, tmp_path: Path) -> dict[str, Any]:
    """The logging section of a sidecar that logs every call to `topic` on the local broker."""
    return {
        "mode": "ALL",
        "topic": topic,
        "bootstrapServers": local_env.kafka_bootstrap,
        "spoolDir": str(tmp_path / "spool"),
    }


async def predict(
    http: aiohttp.ClientSession, sidecar: SidecarProcess, headers: dict[str, str]
) -> aiohttp.ClientResponse:
    async with http.post(
        f"{sidecar.url}/v1/models/{MODEL}:predict",
        json={"instances": [1.0, 2.0]},
        headers={"Authorization": f"ApiKey {KEY}", **headers},
    ) as resp:
        await resp.read()
        return resp


async def spans_of(
    http: aiohttp.ClientSession, jaeger, trace_id: str, count: int
) -> dict[str, dict]:
    """The trace's spans by operation name, once Jaeger holds `count` of them."""
    return {
        span["operationName"]: span for span in await all_spans_of(http, jaeger, trace_id, count)
    }


async def records_of(local_env, topic: str, count: int) -> list:
    """The topic's records, once `count` are there."""
    records: list = []

    async def all_there() -> bool:
        query = InferenceLogQuery(from_beginning=True)
        bootstrap = local_env.kafka_bootstrap
        records[:] = [r async for r in read_inference_log(topic, bootstrap, query)]
        return len(records) >= count

    await wait_for_async(all_there, timeout=60, what=f"{count} records on {topic}", interval=0.5)
    return records


async def record_headers(local_env, topic: str, count: int) -> dict[str, dict[str, str]]:
    """The headers of the topic's records by request id, once `count` are there."""
    return {r.key: r.headers for r in await records_of(local_env, topic, count)}


async def test_a_callers_sampled_trace_goes_on_through_the_sidecar_to_tf_serving_and_its_record(
    local_env, topic, standin: tuple[TFServingStandIn, str], jaeger, tmp_path, http
):
    server, upstream = standin
    config = traced_config(tmp_path, upstream, jaeger, logged_to(local_env, topic, tmp_path))
    caller = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
    async with running_sidecar(tmp_path, config, None) as sidecar:
        resp = await predict(http, sidecar, {"traceparent": caller, "tracestate": "rojo=1"})
        assert resp.status == 200
        answered = resp.headers["traceparent"]
        request_id = resp.headers["X-Request-Id"]
        spans = await spans_of(http, jaeger, TRACE_ID, 4)

    # One trace, the caller's: the sidecar's server span is its child, with the call's story.
    assert set(spans) == {
        f"POST /v1/models/{MODEL}:predict",
        "authenticate",
        f"POST /v1/models/{MODEL}/versions/1:predict",
        "inference log",
    }
    server_span = spans[f"POST /v1/models/{MODEL}:predict"]
    assert {span["traceID"] for span in spans.values()} == {TRACE_ID}
    assert parent_of(server_span) == CALLER_SPAN
    assert tags(server_span) | {
        "span.kind": "server",
        "http.request.method": "POST",
        "http.route": f"/v1/models/{MODEL}:predict",
        "http.response.status_code": 200,
        "modelserving.model.name": MODEL,
        "modelserving.model.version": "1",
        "modelserving.request_id": request_id,
        "enduser.id": "team-a",
    } == tags(server_span)
    authenticate = spans["authenticate"]
    assert parent_of(authenticate) == server_span["spanID"]
    assert tags(authenticate)["modelserving.auth.mode"] == "apiKey"
    upstream_span = spans[f"POST /v1/models/{MODEL}/versions/1:predict"]
    assert parent_of(upstream_span) == server_span["spanID"]
    assert tags(upstream_span)["span.kind"] == "client"
    # The wait for the record's spool write (durability spooled, the default), after the answer.
    log_span = spans["inference log"]
    assert parent_of(log_span) == server_span["spanID"]
    assert tags(log_span)["modelserving.log.durability"] == "spooled"
    assert log_span["startTime"] >= upstream_span["startTime"] + upstream_span["duration"]

    # TF Serving got the context of the span of the call to it, and the caller's tracestate.
    (seen,) = [s for s in server.forwarded if s.headers["X-Request-Id"] == request_id]
    assert seen.headers["traceparent"] == f"00-{TRACE_ID}-{upstream_span['spanID']}-01"
    assert seen.headers["tracestate"] == "rojo=1"
    # The answer names the sidecar's server span: a record leads to its trace.
    assert answered == f"00-{TRACE_ID}-{server_span['spanID']}-01"
    # The record names it too, with the caller's tracestate beside it.
    headers = await record_headers(local_env, topic, 1)
    assert headers[request_id][HEADER_TRACEPARENT] == answered
    assert headers[request_id][HEADER_TRACESTATE] == "rojo=1"


async def test_an_unsampled_request_still_carries_a_trace_context_and_sends_no_span(
    local_env, topic, standin: tuple[TFServingStandIn, str], jaeger, tmp_path, http
):
    server, upstream = standin
    config = traced_config(tmp_path, upstream, jaeger, logged_to(local_env, topic, tmp_path))
    later_trace = "5bf92f3577b34da6a3ce929d0e0e4737"
    async with running_sidecar(tmp_path, config, None) as sidecar:
        quiet = await predict(http, sidecar, {})
        declined = await predict(
            http, sidecar, {"traceparent": f"00-{TRACE_ID[::-1]}-{CALLER_SPAN}-00"}
        )
        invalid = await predict(http, sidecar, {"traceparent": "00-not-a-trace-context-01"})
        # A sampled request after them: once its spans are in Jaeger, anything the sidecar had
        # exported before them would be too (one exporter, in order).
        await predict(http, sidecar, {"traceparent": f"00-{later_trace}-{CALLER_SPAN}-01"})
        await spans_of(http, jaeger, later_trace, 3)
        dropped = await sidecar.metric(
            http, 'modelserving_sidecar_trace_spans_dropped_total{reason="queue_full"}'
        )

    assert [quiet.status, declined.status, invalid.status] == [200, 200, 200]
    started = quiet.headers["traceparent"]
    # Started by the sidecar (no caller's context, or an invalid one): valid, not sampled.
    for resp in (quiet, invalid):
        value = resp.headers["traceparent"]
        assert continued(value) == value and not is_sampled(value)
    assert invalid.headers["traceparent"] != started
    # A caller's unsampled context goes on as it came.
    assert declined.headers["traceparent"] == f"00-{TRACE_ID[::-1]}-{CALLER_SPAN}-00"
    for resp in (quiet, declined, invalid):
        value = resp.headers["traceparent"]
        (seen,) = [
            s for s in server.forwarded if s.headers["X-Request-Id"] == resp.headers["X-Request-Id"]
        ]
        assert seen.headers["traceparent"] == value
        assert await jaeger_trace(http, jaeger, value[3:35]) is None
    assert dropped == 0
    headers = await record_headers(local_env, topic, 4)
    for resp in (quiet, declined, invalid):
        assert (
            headers[resp.headers["X-Request-Id"]][HEADER_TRACEPARENT] == resp.headers["traceparent"]
        )


async def test_over_grpc_the_trace_context_goes_through_metadata(
    local_env, topic, jaeger, tmp_path, http
):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    standin = TFServingStandIn()
    port = free_port()
    trace_id = "6bf92f3577b34da6a3ce929d0e0e4738"  # the module's Jaeger holds the others' too
    caller = f"00-{trace_id}-{CALLER_SPAN}-01"
    async with (
        running_standin(standin) as (_, rest_url),
        running_grpc_standin(standin) as (servicer, direct),
    ):
        config = sidecar_config(
            rest_url,
            auth={"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
            grpc={"port": port, "upstream": direct},
            logging=logged_to(local_env, topic, tmp_path),
            tracing={"endpoint": jaeger.otlp_http},
        )
        async with (
            running_sidecar(tmp_path, config, None) as sidecar,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            metadata = (
                ("authorization", f"ApiKey {KEY}"),
                ("traceparent", caller),
                ("tracestate", "rojo=1"),
            )
            call = PredictionServiceStub(channel).Predict(
                predict_request([1.0]), metadata=metadata, timeout=10
            )
            await call
            answered = dict(await call.initial_metadata())["traceparent"]
            request_id = dict(await call.initial_metadata())["x-request-id"]
            quiet = PredictionServiceStub(channel).Predict(
                predict_request([1.0]), metadata=metadata[:1], timeout=10
            )
            await quiet
            started = dict(await quiet.initial_metadata())["traceparent"]
            spans = await all_spans_of(http, jaeger, trace_id, 3)
            async with http.get(f"{sidecar.url}/metrics", headers={"Accept": OPENMETRICS}) as resp:
                exposition = await resp.text()

    method = "tensorflow.serving.PredictionService/Predict"
    by_kind = {tags(span)["span.kind"]: span for span in spans if span["operationName"] == method}
    server_span, client_span = by_kind["server"], by_kind["client"]
    assert parent_of(server_span) == CALLER_SPAN
    assert tags(server_span) | {
        "rpc.system": "grpc",
        "rpc.service": "tensorflow.serving.PredictionService",
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
        "modelserving.model.name": MODEL,
        "enduser.id": "team-a",
    } == tags(server_span)
    assert parent_of(client_span) == server_span["spanID"]
    (authenticate,) = [span for span in spans if span["operationName"] == "authenticate"]
    assert parent_of(authenticate) == server_span["spanID"]
    assert answered == f"00-{trace_id}-{server_span['spanID']}-01"
    first, second = [seen.metadata["traceparent"] for seen in servicer.seen]
    assert first == f"00-{trace_id}-{client_span['spanID']}-01"
    assert servicer.seen[0].metadata["tracestate"] == "rojo=1"
    # The call's record names its trace, with the caller's tracestate.
    headers = (await record_headers(local_env, topic, 2))[request_id]
    assert (headers[HEADER_TRACEPARENT], headers[HEADER_TRACESTATE]) == (answered, "rojo=1")
    # A call with no trace context: one started, not sampled, sent on as the answer says.
    assert second == started and continued(started) == started and not is_sampled(started)
    # The sampled call's latency bucket names its server span, as a REST call's does.
    exemplars = [
        sample.exemplar.labels
        for family in openmetrics_families(exposition)
        for sample in family.samples
        if sample.exemplar is not None and sample.labels.get("route") == "grpc_predict"
    ]
    assert exemplars == [{"trace_id": trace_id, "span_id": server_span["spanID"]}]


async def test_a_kubernetes_tokens_first_check_is_a_token_review_and_its_second_the_cache(
    local_env, kube_client, namespace, upstream, jaeger
):
    grant_predict(kube_client, namespace, "caller")
    token = service_account_token(kube_client, namespace, "caller", AUDIENCE)
    config = sidecar_config(
        upstream,
        serving={"name": SERVING, "namespace": namespace},
        auth={"mode": "kubernetes", "audience": AUDIENCE, "kubeconfig": local_env.kubeconfig},
        tracing={"endpoint": jaeger.otlp_http},
    )
    first, second = "8bf92f3577b34da6a3ce929d0e0e473a", "9bf92f3577b34da6a3ce929d0e0e473b"
    async with sidecar(parse_config(config)) as (_, url), aiohttp.ClientSession() as http:
        for trace_id in (first, second):
            async with http.post(
                f"{url}/v1/models/{MODEL}:predict",
                json={"instances": [1.0]},
                headers={
                    "Authorization": f"Bearer {token}",
                    "traceparent": f"00-{trace_id}-{CALLER_SPAN}-01",
                },
            ) as resp:
                assert resp.status == 200, await resp.text()
        reviewed = (await spans_of(http, jaeger, first, 3))["authenticate"]
        cached = (await spans_of(http, jaeger, second, 3))["authenticate"]

    assert tags(reviewed)["modelserving.auth.mode"] == "kubernetes"
    assert tags(reviewed)["modelserving.auth.cache"] == "miss"  # the API server was asked
    assert tags(cached)["modelserving.auth.cache"] == "hit"


async def test_a_sampled_calls_shadow_copy_is_a_span_whose_context_tf_serving_got(
    local_env, topic, jaeger, tmp_path, http
):
    # Version 1 answers every call, version 5 gets a copy of each.
    server = TFServingStandIn({MODEL: StandInModel((1, 5))})
    routing = {
        "versions": [{"version": 1, "weight": 100, "labels": []}],
        "shadow": {"version": 5, "percent": 100},
    }
    trace_id = "abf92f3577b34da6a3ce929d0e0e473c"
    async with running_standin(server) as (_, upstream):
        config = traced_config(tmp_path, upstream, jaeger, logged_to(local_env, topic, tmp_path))
        async with running_sidecar(tmp_path, config, routing) as sidecar_process:
            quiet = await predict(http, sidecar_process, {})
            resp = await predict(
                http,
                sidecar_process,
                {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01", "tracestate": "rojo=1"},
            )
            assert (quiet.status, resp.status) == (200, 200)
            # The server span, authenticate, the call to TF Serving, the log, the shadow copy.
            spans = await spans_of(http, jaeger, trace_id, 5)
            records = await records_of(local_env, topic, 4)
    request_id, answered = resp.headers["X-Request-Id"], resp.headers["traceparent"]

    server_span = spans[f"POST /v1/models/{MODEL}:predict"]
    copy = spans["shadow copy"]
    assert parent_of(copy) == server_span["spanID"]
    assert tags(copy) | {
        "span.kind": "client",
        "http.request.method": "POST",
        "url.path": f"/v1/models/{MODEL}/versions/5:predict",
        "http.response.status_code": 200,
        "modelserving.model.version": "5",
        "modelserving.request_id": request_id,
    } == tags(copy)
    # The shadow got the copy's own context, and the caller's tracestate.
    (seen,) = [
        s
        for s in server.forwarded
        if s.headers["X-Request-Id"] == request_id and "versions/5" in s.path
    ]
    assert seen.headers["traceparent"] == f"00-{trace_id}-{copy['spanID']}-01"
    assert seen.headers["tracestate"] == "rojo=1"
    # The shadow's record names the call's trace, as the main record does.
    (shadow_record,) = [
        r for r in records if r.key == request_id and r.headers[HEADER_ROLE] == "shadow"
    ]
    assert shadow_record.headers[HEADER_TRACEPARENT] == answered
    assert shadow_record.headers[HEADER_TRACESTATE] == "rojo=1"
    # The unsampled call's copy went with its context and no span (its copy left first: a span
    # of it would be in Jaeger by now).
    (quiet_copy,) = [
        s
        for s in server.forwarded
        if s.headers["X-Request-Id"] == quiet.headers["X-Request-Id"] and "versions/5" in s.path
    ]
    assert quiet_copy.headers["traceparent"] == quiet.headers["traceparent"]
    assert await jaeger_trace(http, jaeger, quiet.headers["traceparent"][3:35]) is None


async def test_a_sampled_calls_latency_bucket_names_its_trace_as_the_exemplar_prometheus_keeps(
    standin: tuple[TFServingStandIn, str], jaeger, tmp_path, http
):
    _, upstream = standin
    config = traced_config(tmp_path, upstream, jaeger, {"mode": "NONE"})
    trace_id = "cbf92f3577b34da6a3ce929d0e0e473d"
    (tmp_path / "prometheus").mkdir()
    async with running_sidecar(tmp_path, config, None) as sidecar_process:
        # A real Prometheus keeping exemplars, scraping the sidecar (it asks for OpenMetrics).
        prometheus = PrometheusServer(
            tmp_path / "prometheus",
            free_port(),
            [Target("modelserving-sidecar", sidecar_process.url.removeprefix("http://"))],
            features=["exemplar-storage"],
        )
        await asyncio.to_thread(prometheus.start)
        try:
            quiet = await predict(http, sidecar_process, {})  # not sampled: marks nothing
            resp = await predict(
                http, sidecar_process, {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}
            )
            assert (quiet.status, resp.status) == (200, 200)
            kept: list[dict] = []

            async def kept_by_prometheus() -> bool:
                series = await prometheus.exemplars(
                    'modelserving_sidecar_request_duration_seconds_bucket{route="predict"}'
                )
                kept[:] = [e for s in series for e in s["exemplars"]]
                return bool(kept)

            await wait_for_async(kept_by_prometheus, timeout=30, what="an exemplar in Prometheus")
            spans = await spans_of(http, jaeger, trace_id, 3)
        finally:
            await asyncio.to_thread(prometheus.stop)

    # The one exemplar names the sampled call's server span, which Jaeger holds.
    (exemplar,) = kept
    server_span = spans[f"POST /v1/models/{MODEL}:predict"]
    assert exemplar["labels"] == {"trace_id": trace_id, "span_id": server_span["spanID"]}
    assert quiet.headers["traceparent"][3:35] != trace_id


async def test_a_collector_that_is_down_changes_no_answer_and_each_span_lost_is_counted(
    standin: tuple[TFServingStandIn, str], tmp_path, http
):
    server, upstream = standin
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text(hash_api_key(KEY))
    down = f"http://127.0.0.1:{free_port()}/v1/traces"  # no collector listens there
    config = sidecar_config(
        upstream,
        auth={"mode": "apiKey", "apiKeysDir": str(tmp_path / "keys")},
        tracing={"endpoint": down, "ratio": 1.0},  # every call sampled: three spans each
    )
    calls = 40
    failed = 'modelserving_sidecar_trace_spans_dropped_total{reason="export_failed"}'
    async with running_sidecar(tmp_path, config, None) as sidecar:
        answers = [await predict(http, sidecar, {}) for _ in range(calls)]
        # Each span is exported or counted: here none can be, so all are counted, once the
        # exporter has given up on them (its timeout, per batch). Probes and scrapes (this
        # test's /healthz and /metrics) have no spans: the count is the calls' alone.

        async def all_counted() -> bool:
            return await sidecar.metric(http, failed) == 3 * calls

        await wait_for_async(all_counted, timeout=60, what=f"{3 * calls} spans counted lost")
        queue_full = await sidecar.metric(
            http, 'modelserving_sidecar_trace_spans_dropped_total{reason="queue_full"}'
        )
    assert [resp.status for resp in answers] == [200] * calls
    for resp in answers:  # sampled, by the ratio; and TF Serving was called in that trace
        value = resp.headers["traceparent"]
        assert continued(value) == value and is_sampled(value)
        (seen,) = [
            s for s in server.forwarded if s.headers["X-Request-Id"] == resp.headers["X-Request-Id"]
        ]
        assert seen.headers["traceparent"][3:35] == value[3:35]
    assert queue_full == 0
    # Said once, not per retry or batch.
    said = (tmp_path / "sidecar.log").read_text()
    assert said.count("does not take the spans") == 1, said[-3000:]
    assert "Transient error" not in said and "Failed to export spans batch" not in said
