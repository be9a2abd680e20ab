"""The activator against the real API server: a serving at zero (its ModelServing, and a Deployment
of its name at 0 replicas whose pods land on the process node) gets a request through the
activator, which holds it, scales the Deployment to 1 and, once KWOK has made the pod Ready at
an address this machine serves and the real sidecar listens there, forwards it: the model
answers. Held too long: 503 with Retry-After. No credential: 401, and the serving stays at 0.
What is real: the API server, its Deployment controller and scheduler, the activator and the
sidecar as processes; KWOK plays the kubelet (the pod's address and its Ready condition), and
the test starts the pod's containers (the sidecar, the TF Serving stand-in) at that address."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from kubernetes import client
from multidict import CIMultiDict

from modelserving import api
from modelserving.tfserving import serving_apis_pb2 as apis
from modelserving.tfserving import tensor_pb2, types_pb2
from modelserving.tfserving.serving_apis_pb2_grpc import PredictionServiceStub
from modelserving_sidecar.auth.api_keys import KEY_REQUIRED, hash_api_key
from tests.support.activator_process import ActivatorProcess, running_activator
from tests.support.jaeger_queries import all_spans_of, parent_of, tags
from tests.support.ports import free_port
from tests.support.process_node import ProcessNode
from tests.support.servings import serving_manifest
from tests.support.sidecar_process import running_sidecar
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.tfserving_standin_grpc import running_grpc_standin
from tests.support.waiting import wait_for_async

SERVING = "hpt"
MODEL = "half_plus_two"
KEY = "activator-test-key"


def at_zero(kube_client, namespace: str, placement: dict) -> None:
    """The serving's ModelServing, and its Deployment at 0 replicas placed by `placement`."""
    client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest(SERVING)
    )
    # The labels the operator gives a serving's pods (the activator watches those).
    labels = {
        api.LABEL_NAME: api.SERVING_APP_NAME,
        api.LABEL_INSTANCE: SERVING,
        api.LABEL_COMPONENT: api.SERVING_COMPONENT,
    }
    client.AppsV1Api(kube_client).create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": SERVING, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": api.SIDECAR_CONTAINER, "image": "modelserving"}],
                        **placement,
                    },
                },
            },
        },
    )


def replicas(kube_client, namespace: str) -> int:
    scale = client.AppsV1Api(kube_client).read_namespaced_deployment_scale(SERVING, namespace)
    return int(scale.spec.replicas or 0)


def ready_pod_address(kube_client, namespace: str) -> str | None:
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(
        namespace, label_selector=f"{api.LABEL_INSTANCE}={SERVING}"
    )
    for pod in pods.items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.status.pod_ip:
            return str(pod.status.pod_ip)
    return None


async def predict(
    http: aiohttp.ClientSession,
    activator: ActivatorProcess,
    namespace: str,
    x: float = 1.0,
    authorization: str | None = f"ApiKey {KEY}",
) -> tuple[int, dict, CIMultiDict[str]]:
    headers = {"Host": f"{SERVING}.{namespace}.svc:8080", "traceparent": TRACEPARENT}
    if authorization:
        headers["Authorization"] = authorization
    async with http.post(
        f"{activator.url}/v1/models/{MODEL}:predict",
        json={"instances": [x]},
        headers=headers,
    ) as resp:
        return resp.status, json.loads(await resp.read()), resp.headers.copy()


WAKES = "modelserving_activator_wakes_total"
HELD = "modelserving_activator_requests_held"
REFUSED = "modelserving_activator_refused_requests_total"
FORWARDED = "modelserving_activator_forwarded_requests_total"


def of(namespace: str) -> dict[str, str]:
    """The labels of the serving's samples."""
    return {"namespace": namespace, "serving": SERVING}


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@contextlib.asynccontextmanager
async def pod_containers(
    tmp_path: Path, namespace: str, address: str, grpc_port: int = 0, **sidecar: Any
) -> AsyncIterator[None]:
    """The pod's containers as processes at its address: the stand-in, and the real sidecar on
    the sidecar's port there, with the serving's API key (and TF Serving's gRPC API on
    `grpc_port`, when one is given; `sidecar`: more of its config)."""
    keys = tmp_path / "apikeys"
    keys.mkdir()
    (keys / "caller").write_text(hash_api_key(KEY))
    standin = TFServingStandIn()
    async with (
        running_standin(standin) as (_, upstream),
        running_grpc_standin(standin) as (_, grpc_upstream),
    ):
        config: dict = {
            "serving": {"name": SERVING, "namespace": namespace},
            "model": {"name": MODEL, "version": 1, "modelId": 17},
            "upstream": {"url": upstream},
            "auth": {"mode": "apiKey", "apiKeysDir": str(keys)},
            **sidecar,
        }
        if grpc_port:
            config["grpc"] = {"port": grpc_port, "upstream": grpc_upstream}
        async with running_sidecar(tmp_path, config, None, host=address, port=api.SIDECAR_PORT):
            yield


@contextlib.asynccontextmanager
async def serve_when_woken(
    kube_client, namespace: str, tmp_path: Path, grpc_port: int = 0, **sidecar: Any
) -> AsyncIterator[str]:
    """Wait for the wake (scale 1) and the pod Ready at an address this machine serves; then run
    its containers there until closed. Yields the pod's address."""

    # The kubernetes client blocks: its calls run in a thread, the held requests meanwhile.
    async def scaled() -> bool:
        return await asyncio.to_thread(replicas, kube_client, namespace) == 1

    async def ready() -> str | None:
        return await asyncio.to_thread(ready_pod_address, kube_client, namespace)

    await wait_for_async(scaled, 30, "the Deployment scaled to 1")
    address = await wait_for_async(ready, 30, "the pod Ready with an address")
    async with pod_containers(tmp_path, namespace, address, grpc_port, **sidecar):
        yield address


async def test_a_request_at_zero_wakes_the_serving_and_the_model_answers_it(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
):
    at_zero(kube_client, namespace, process_node.placement())
    async with running_activator(tmp_path, activator_kubeconfig, namespace) as activator:
        request = asyncio.create_task(predict(http, activator, namespace, x=1.0))
        async with serve_when_woken(kube_client, namespace, tmp_path) as address:
            assert process_node.holds(address)
            status, body, headers = await asyncio.wait_for(request, 60)
            assert (status, body) == (200, {"predictions": [2.5]})
            # The sidecar's answer, passed on as it is: its request id and the version; the
            # trace context went through to it (its answer continues the caller's trace).
            assert headers.get("X-Request-Id") and headers.get("x-model-version") == "1"
            assert headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]

            events = client.CoreV1Api(kube_client).list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={SERVING}"
            )
            woke = [e for e in events.items if e.reason == "Woken"]
            assert len(woke) == 1 and woke[0].type == "Normal", woke
            assert "1 request held" in woke[0].message
            assert woke[0].involved_object.kind == api.KIND

            assert await activator.metric(http, WAKES, **of(namespace), result="scaled") == 1
            assert await activator.metric(http, "modelserving_activator_wake_seconds_count") == 1
            assert await activator.metric(http, HELD, **of(namespace)) == 0

            # With the pod up, a request goes straight through.
            assert (await predict(http, activator, namespace, x=4.0))[:2] == (
                200,
                {"predictions": [4.0]},
            )


async def test_a_sampled_request_at_zero_has_the_activators_spans_in_its_trace(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
    jaeger,
):
    at_zero(kube_client, namespace, process_node.placement())
    flags = ("--tracing-endpoint", jaeger.otlp_http)
    tracing = {"tracing": {"endpoint": jaeger.otlp_http}}
    async with running_activator(tmp_path, activator_kubeconfig, namespace, *flags) as activator:
        request = asyncio.create_task(predict(http, activator, namespace, x=2.0))
        async with serve_when_woken(kube_client, namespace, tmp_path, **tracing):
            status, _, headers = await asyncio.wait_for(request, 60)
            assert status == 200
    # The caller's trace: the activator's server span (the caller's child), its call to the
    # pod, and the pod's sidecar's span as that call's child.
    trace_id = TRACEPARENT.split("-")[1]
    await all_spans_of(http, jaeger, trace_id, 5)
    async with http.get(f"{jaeger.query_url}/api/traces/{trace_id}") as resp:
        (found,) = (await resp.json())["data"]
    by_service: dict[str, list[dict]] = {}
    for span in found["spans"]:
        service = found["processes"][span["processID"]]["serviceName"]
        by_service.setdefault(service, []).append(span)
    (server,) = [s for s in by_service["modelserving-activator"] if s["operationName"] != "POST"]
    assert server["operationName"] == "POST activator"
    assert parent_of(server) == TRACEPARENT.split("-")[2]
    assert tags(server)["modelserving.serving"] == f"{namespace}/{SERVING}"
    assert tags(server)["http.response.status_code"] == 200
    # It was held: for the wake, the pod's start and its sidecar's.
    assert tags(server)["modelserving.activator.held_seconds"] > 0
    # Its tries at the pod (one refused while the sidecar was starting, maybe): the one that
    # was answered is the parent of the sidecar's span.
    tries = {s["spanID"]: s for s in by_service["modelserving-activator"] if s is not server}
    assert tries and all(parent_of(t) == server["spanID"] for t in tries.values())
    sidecar_server = next(
        s for s in by_service["modelserving-sidecar"] if tags(s).get("span.kind") == "server"
    )
    answered = tries[parent_of(sidecar_server)]
    assert tags(answered)["http.response.status_code"] == 200
    # The answer names the sidecar's span, in the caller's trace.
    assert headers["traceparent"].split("-")[1] == trace_id


def grpc_predict(
    channel: grpc.aio.Channel, x: float, authorization: str | None = f"ApiKey {KEY}"
) -> grpc.aio.UnaryUnaryCall:
    shape = tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=1)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[x])
    request = apis.PredictRequest(model_spec=apis.ModelSpec(name=MODEL), inputs={"x": tensor})
    metadata = [("authorization", authorization)] if authorization else []
    return PredictionServiceStub(channel).Predict(request, metadata=metadata, timeout=60)


def grpc_channel(activator: ActivatorProcess, namespace: str) -> grpc.aio.Channel:
    """A channel to the activator as a client of the serving's Service has one: the Service's
    name as its authority."""
    authority = f"{SERVING}.{namespace}.svc:{api.SIDECAR_GRPC_PORT}"
    return grpc.aio.insecure_channel(
        activator.grpc_address, options=[("grpc.default_authority", authority)]
    )


async def test_a_grpc_call_at_zero_wakes_the_serving_and_its_sidecar_answers_it(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
):
    at_zero(kube_client, namespace, process_node.placement())
    pod_grpc = free_port()
    flags = ("--pod-grpc-port", str(pod_grpc))
    async with (
        running_activator(tmp_path, activator_kubeconfig, namespace, *flags) as activator,
        grpc_channel(activator, namespace) as channel,
    ):
        call = grpc_predict(channel, 3.0)
        async with serve_when_woken(kube_client, namespace, tmp_path, pod_grpc):
            answer = await asyncio.wait_for(call, 60)
            assert list(answer.outputs["y"].float_val) == [3.5]
            # The sidecar's answer: its request id and the model's version in the metadata.
            metadata = dict(await call.initial_metadata())
            assert metadata.get("x-request-id") and metadata.get("x-model-version") == "1"
            assert await activator.metric(http, WAKES, **of(namespace), result="scaled") == 1
            assert await activator.metric(http, FORWARDED, **of(namespace)) == 1
            # Later calls on the same channel reach the pod too.
            assert list((await grpc_predict(channel, 5.0)).outputs["y"].float_val) == [4.5]


async def test_a_grpc_call_without_credentials_is_refused_and_wakes_nothing(
    local_env, activator_kubeconfig, kube_client, crds, namespace, tmp_path, http
):
    at_zero(kube_client, namespace, {"nodeSelector": {"modelserving.io/no-such-node": "x"}})
    async with (
        running_activator(tmp_path, activator_kubeconfig, namespace) as activator,
        grpc_channel(activator, namespace) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_predict(channel, 1.0, authorization=None)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == KEY_REQUIRED
        no_credentials = await activator.metric(
            http, REFUSED, **of(namespace), reason="no_credentials"
        )
        assert no_credentials == 1
        assert replicas(kube_client, namespace) == 0


async def test_twenty_requests_held_at_once_are_all_answered_by_the_model(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
):
    at_zero(kube_client, namespace, process_node.placement())
    async with running_activator(tmp_path, activator_kubeconfig, namespace) as activator:
        requests = [
            asyncio.create_task(predict(http, activator, namespace, x=float(i))) for i in range(20)
        ]

        async def all_held() -> bool:
            return await activator.metric(http, HELD, **of(namespace)) == 20

        await wait_for_async(all_held, 30, "20 requests held")
        async with serve_when_woken(kube_client, namespace, tmp_path):
            answers = await asyncio.wait_for(asyncio.gather(*requests), 60)
        assert [(status, body) for status, body, _ in answers] == [
            (200, {"predictions": [0.5 * i + 2.0]}) for i in range(20)
        ]
        # One wake for all of them.
        assert await activator.metric(http, WAKES, **of(namespace), result="scaled") == 1


async def test_a_request_held_past_its_deadline_gets_503_with_retry_after(
    local_env, activator_kubeconfig, kube_client, crds, namespace, tmp_path, http
):
    # Its pods can land on no node: the wake is asked for, and no pod is ever ready.
    at_zero(kube_client, namespace, {"nodeSelector": {"modelserving.io/no-such-node": "x"}})
    flags = ("--hold-seconds", "2", "--retry-after", "7")
    async with running_activator(tmp_path, activator_kubeconfig, namespace, *flags) as activator:
        status, body, headers = await predict(http, activator, namespace)
        assert status == 503, body
        assert headers["Retry-After"] == "7"
        assert set(body) == {"error"} and f"{namespace}/{SERVING}" in body["error"], body
        assert replicas(kube_client, namespace) == 1  # it was woken all the same
        too_long = await activator.metric(http, REFUSED, **of(namespace), reason="held_too_long")
        assert too_long == 1
        assert await activator.metric(http, HELD, **of(namespace)) == 0


async def test_a_request_without_credentials_is_refused_401_and_wakes_nothing(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
):
    at_zero(kube_client, namespace, process_node.placement())
    async with running_activator(tmp_path, activator_kubeconfig, namespace) as activator:
        status, body, headers = await predict(http, activator, namespace, authorization=None)
        assert (status, body) == (401, {"error": KEY_REQUIRED})
        assert headers["WWW-Authenticate"] == f'ApiKey realm="{namespace}/{SERVING}"'
        refused = await activator.metric(http, REFUSED, **of(namespace), reason="no_credentials")
        assert refused == 1
        # A Bearer token is not the scheme of an apiKey serving either.
        bearer = await predict(http, activator, namespace, authorization="Bearer a.b.c")
        assert bearer[:2] == (401, {"error": KEY_REQUIRED})

        # Neither was held nor woke it: the activator asked for nothing, the scale is still 0.
        assert "woke" not in activator.log()
        assert replicas(kube_client, namespace) == 0
        assert await activator.metric(http, WAKES, **of(namespace), result="scaled") == 0


async def test_a_host_no_serving_answers_to_gets_404_saying_which(
    local_env, activator_kubeconfig, kube_client, crds, namespace, tmp_path, http
):
    headers = {"Host": "nobody.example:8080", "Authorization": f"ApiKey {KEY}"}
    async with (
        running_activator(tmp_path, activator_kubeconfig, namespace) as activator,
        http.post(
            f"{activator.url}/v1/models/{MODEL}:predict", json={"instances": [1.0]}, headers=headers
        ) as resp,
    ):
        assert resp.status == 404
        assert "nobody.example" in (await resp.json())["error"]


async def test_sigterm_answers_the_held_requests_503_with_retry_after_and_exits(
    local_env, activator_kubeconfig, kube_client, crds, namespace, tmp_path, http
):
    at_zero(kube_client, namespace, {"nodeSelector": {"modelserving.io/no-such-node": "x"}})
    async with running_activator(tmp_path, activator_kubeconfig, namespace) as activator:
        requests = [asyncio.create_task(predict(http, activator, namespace)) for _ in range(3)]

        async def all_held() -> bool:
            return await activator.metric(http, HELD, **of(namespace)) == 3

        await wait_for_async(all_held, 30, "3 requests held")
        activator.process.send_signal(signal.SIGTERM)
        # Answered at once, not at the hold's deadline (60 s): the wait is bounded well below it.
        answers = await asyncio.wait_for(asyncio.gather(*requests), 10)
        for status, body, headers in answers:
            assert status == 503 and "stopping" in body["error"], body
            assert headers["Retry-After"] == "5"
        assert await asyncio.wait_for(activator.process.wait(), 30) == 0


async def test_a_killed_activator_fails_its_held_requests_at_once_and_the_other_takes_the_next(
    local_env,
    activator_kubeconfig,
    kube_client,
    crds,
    namespace,
    process_node: ProcessNode,
    tmp_path,
    http,
):
    """The chart runs two: one killed (SIGKILL, as an OOM or a node lost) while it holds
    requests closes their connections, so each caller sees an error at once, never a hang; the
    other replica holds and forwards the next requests as if nothing happened."""
    at_zero(kube_client, namespace, process_node.placement())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_activator(tmp_path / "a", activator_kubeconfig, namespace) as killed,
        running_activator(tmp_path / "b", activator_kubeconfig, namespace) as other,
    ):
        held = [asyncio.create_task(predict(http, killed, namespace)) for _ in range(5)]

        async def all_held() -> bool:
            return await killed.metric(http, HELD, **of(namespace)) == 5

        # Woken, its pod Ready where nothing listens yet: the requests stay held.
        await wait_for_async(all_held, 30, "5 requests held")
        killed.process.kill()
        # Each caller gets its error within seconds (the connection closed), not at its timeout.
        ended = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 10)
        assert all(isinstance(e, aiohttp.ClientConnectionError) for e in ended), ended

        request = asyncio.create_task(predict(http, other, namespace, x=6.0))
        async with serve_when_woken(kube_client, namespace, tmp_path) as _:
            status, body, _headers = await asyncio.wait_for(request, 60)
        assert (status, body) == (200, {"predictions": [5.0]})
