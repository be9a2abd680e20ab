"""A serving that scales on concurrency, through the real API server, controllers and operator,
with a real sidecar process per pod at the address KWOK gave the pod (tests/support/
pod_processes): a load step raises the replicas within the burst window, and once the load is
gone they come down, to zero after the idle time, with no request failed and no record lost
on the way. Its
Service has no selector: the operator writes its endpoints, the ready pods', and at zero the
activator's (here a pod and a Service that stand for it; nothing is sent to them)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
import yaml
from kubernetes import client

from modelserving import api
from modelserving.inferencelog.query import InferenceLogQuery
from modelserving.inferencelog.reader import read_inference_log
from tests.support.activator_process import running_activator
from tests.support.pod_processes import serving_pods
from tests.support.servings import condition, config_file, get_serving, serving_manifest
from tests.support.sidecar_configs import sidecar_config
from tests.support.tfserving_standin import StandInModel, TFServingStandIn, running_standin
from tests.support.waiting import wait_for, wait_for_async

ACTIVATOR = "activator"


@pytest.fixture
def operator_flags(namespace) -> list[str]:
    return ["--activator-service", f"{namespace}/{ACTIVATOR}"]


@pytest.fixture
def activator(kube_client, namespace, process_node) -> str:
    """A Service named as the activator's, with one ready pod: its address."""
    core = client.CoreV1Api(kube_client)
    labels = {"app": ACTIVATOR}
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": f"{ACTIVATOR}-0", "labels": labels},
            "spec": {
                "containers": [{"name": ACTIVATOR, "image": "modelserving"}],
                **process_node.placement(),
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": ACTIVATOR},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": api.SIDECAR_PORT}]},
        },
    )

    def address() -> str | None:
        pod = core.read_namespaced_pod(f"{ACTIVATOR}-0", namespace)
        return pod.status.pod_ip

    return wait_for(address, 30, "the activator's pod to get its address")


def slice_addresses(kube_client, namespace: str, name: str) -> list[str] | None:
    """The addresses of the serving's own EndpointSlice (None: there is none)."""
    discovery = client.DiscoveryV1Api(kube_client)
    try:
        found = discovery.read_namespaced_endpoint_slice(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return sorted(e.addresses[0] for e in found.endpoints or [])


MODEL = "half_plus_two"
SCALING = {
    "enabled": True,
    "metric": "concurrency",
    "minReplicas": 0,
    "maxReplicas": 3,
    "targetConcurrency": 7,
    "stableWindowSeconds": 6,  # the panic window: 10 % of it, the last reading alone
    "scaleToZeroAfterSeconds": 10,
}
IN_FLIGHT = 20  # callers that each send again as soon as answered: 3 pods' worth at target 7


def replicas(apps: client.AppsV1Api, namespace: str, name: str) -> int | None:
    try:
        return apps.read_namespaced_deployment(name, namespace).spec.replicas
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def scaled_events(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason=Scaled"
    )
    return [event.message for event in events.items]


async def test_load_raises_the_replicas_and_idleness_takes_them_to_zero(
    operator, kube_client, local_env, namespace, process_node, activator, topic, tmp_path, http
):
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    objects = client.CustomObjectsApi(kube_client)
    name = "scaled"
    manifest = serving_manifest(
        name,
        model={"name": MODEL, "version": 1, "basePath": "s3://models/hpt"},
        auth={"mode": "none"},
        logging={"enabled": False},
        server=process_node.placement(),
        autoscaling=SCALING,
    )
    objects.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    # The model holds each request 0.2 s, so that requests are in flight to count.
    standin = TFServingStandIn({MODEL: StandInModel(versions=(1,))}, delay_seconds=0.2)

    async def count(want: int) -> bool:
        return await asyncio.to_thread(replicas, apps, namespace, name) == want

    async with (
        running_standin(standin) as (_, upstream),
        serving_pods(
            core,
            namespace,
            name,
            tmp_path,
            lambda pod: sidecar_config(
                upstream,
                serving={"name": name, "namespace": namespace},
                logging={
                    "mode": "ALL",
                    "topic": topic,
                    "bootstrapServers": local_env.kafka_bootstrap,
                    "spoolDir": str(tmp_path / pod / "spool"),
                },
            ),
        ) as pods,
    ):
        # The Deployment starts at one replica (Kubernetes' default; the operator names none).
        await wait_for_async(lambda: _serving(pods, 1), 60, "the first pod's sidecar")
        assert await count(1)
        service = core.read_namespaced_service(name, namespace)
        assert service.spec.selector is None  # the endpoints are the operator's

        answers: Counter[int] = Counter()
        answered: list[str] = []  # the request ids of the answers, each to be on the topic
        stop = asyncio.Event()

        async def caller(start: int) -> None:
            for turn in itertools.count(start):
                if stop.is_set():
                    return
                urls = pods.addresses()  # the pods that serve, as the Service's endpoints
                if not urls:
                    await asyncio.sleep(0.05)
                    continue
                url = urls[turn % len(urls)]
                predict = f"{url}/v1/models/{MODEL}:predict"
                async with http.post(predict, json={"instances": [1.0]}) as resp:
                    answers[resp.status] += 1
                    answered.append(resp.headers["x-request-id"])

        callers = [asyncio.create_task(caller(i)) for i in range(IN_FLIGHT)]
        try:
            await wait_for_async(lambda: count(3), 30, "the burst to raise the replicas to 3")
            await wait_for_async(lambda: _serving(pods, 3), 60, "three pods' sidecars serving")
            await wait_for_async(
                lambda: _endpoints_are(kube_client, namespace, name, pods.ips()),
                30,
                "the serving's EndpointSlice to name its three pods",
            )
        finally:
            stop.set()
            await asyncio.gather(*callers)
        assert answers and set(answers) == {200}, answers
        up = await asyncio.to_thread(scaled_events, core, namespace, name)
        assert any("1 to 3 replicas: a burst" in message for message in up), up
        # The replica count is the autoscaler's, through the scale subresource, as managedFields
        # tell anyone who looks (`kubectl get deploy -o yaml --show-managed-fields`).
        deployment = apps.read_namespaced_deployment(name, namespace)
        owners = {(f.manager, f.subresource) for f in deployment.metadata.managed_fields}
        assert ("modelserving-autoscaler", "scale") in owners, owners

        # Idle: down by half a round to one pod, which stays for the idle time, then none.
        await wait_for_async(lambda: count(0), 90, "the idle serving to go to zero")
        await wait_for_async(lambda: _serving(pods, 0), 60, "the pods to go")
    down = await asyncio.to_thread(scaled_events, core, namespace, name)
    assert any("1 to 0 replicas: no request in flight for 10 s" in m for m in down), down
    # At zero the Service sends to the activator, and the serving is Ready: a request wakes it.
    await wait_for_async(
        lambda: _endpoints_are(kube_client, namespace, name, [activator]),
        30,
        "the serving's EndpointSlice to name the activator",
    )
    ready = condition(get_serving(objects, namespace, name), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ScaledToZero"), ready
    # Every answered request's record reached the topic, those of the pods that went too (each
    # drained its spool to Kafka as it stopped).
    records = await _records(topic, local_env.kafka_bootstrap, len(answered))
    assert sorted(r.key for r in records) == sorted(answered)


async def _endpoints_are(kube_client, namespace: str, name: str, addresses: list[str]) -> bool:
    found = await asyncio.to_thread(slice_addresses, kube_client, namespace, name)
    return found == sorted(addresses)


async def _serving(pods, want: int) -> bool:
    return len(pods.addresses()) == want


async def test_at_zero_the_activator_holds_fifty_requests_and_the_woken_pod_answers_and_logs_each(
    operator,
    kube_client,
    local_env,
    activator_kubeconfig,
    namespace,
    process_node,
    activator,
    tmp_path,
    http,
):
    """The walk the README gives: a serving goes to zero, its endpoints become the activator's
    (the real activator, at the address its pod was given), and 50 requests sent at once to
    an address of the Service's EndpointSlice, as kube-proxy would, are held, wake the
    serving and are answered by its new pod, each logged once on the topic."""
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)
    objects = client.CustomObjectsApi(kube_client)
    name = "woken"
    manifest = serving_manifest(
        name,
        model={"name": MODEL, "version": 1, "basePath": "s3://models/hpt"},
        auth={"mode": "none"},
        logging={"kafka": {"bootstrapServers": local_env.kafka_bootstrap}},
        sidecar={"grpc": {"enabled": False}},
        server=process_node.placement(),
        autoscaling={**SCALING, "maxReplicas": 1},
    )
    objects.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)

    def pod_config(pod: str) -> dict:
        """The sidecar config the operator rendered, with the pod's own paths and TF Serving
        the stand-in (as the demo runs a pod's containers)."""
        rendered = config_file(core, apps, namespace, name, "sidecar.yaml")
        assert rendered is not None
        config = yaml.safe_load(rendered)
        config["upstream"]["url"] = upstream
        config["logging"]["spoolDir"] = str(tmp_path / pod / "spool")
        return config

    async def count(want: int) -> bool:
        return await asyncio.to_thread(replicas, apps, namespace, name) == want

    async with (
        running_standin(TFServingStandIn({MODEL: StandInModel(versions=(1,))})) as (
            _,
            upstream,
        ),
        running_activator(
            tmp_path,
            activator_kubeconfig,
            namespace,
            host=activator,
            port=api.SIDECAR_PORT,
        ),
        serving_pods(core, namespace, name, tmp_path, pod_config) as pods,
    ):
        await wait_for_async(lambda: count(0), 90, "the idle serving to go to zero")
        await wait_for_async(
            lambda: _endpoints_are(kube_client, namespace, name, [activator]),
            30,
            "the serving's EndpointSlice to name the activator",
        )
        (address,) = await asyncio.to_thread(slice_addresses, kube_client, namespace, name)
        host = f"{name}.{namespace}.svc:{api.SIDECAR_PORT}"  # what a caller of it sends

        async def predict(i: int) -> tuple[int, dict, str]:
            ids = {"x-request-id": f"held-{i}", "Host": host}
            url = f"http://{address}:{api.SIDECAR_PORT}/v1/models/{MODEL}:predict"
            async with http.post(url, json={"instances": [float(i)]}, headers=ids) as resp:
                return resp.status, await resp.json(), resp.headers["x-request-id"]

        answers = await asyncio.gather(*(predict(i) for i in range(50)))
        assert [status for status, _, _ in answers] == [200] * 50
        # Each caller got its own prediction (half_plus_two: x / 2 + 2), from the pod woken.
        assert [body["predictions"] for _, body, _ in answers] == [[i / 2 + 2] for i in range(50)]
        assert await count(1)
        # (The activator forwards once the pod's port opens, maybe before the test's own poll
        # of the sidecar has seen it serve.)
        await wait_for_async(lambda: _serving(pods, 1), 30, "the woken pod's sidecar")
    woken = await asyncio.to_thread(
        core.list_namespaced_event,
        namespace,
        field_selector=f"involvedObject.name={name},reason=Woken",
    )
    assert woken.items, "no Woken Event"
    topic = f"{namespace}.{name}.inference"  # the serving's own
    records = await _records(topic, local_env.kafka_bootstrap, 50)
    assert sorted(r.key for r in records) == sorted(f"held-{i}" for i in range(50))


async def _records(topic: str, bootstrap: str, expected: int) -> list:
    records: list = []

    async def all_there() -> bool:
        query = InferenceLogQuery(from_beginning=True)
        records[:] = [r async for r in read_inference_log(topic, bootstrap, query)]
        return len(records) >= expected

    await wait_for_async(all_there, 60, f"{expected} records on {topic}", interval=0.5)
    return records
