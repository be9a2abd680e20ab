"""The real sidecar process publishes its model report on a real Pod through pods/status, as it
does from inside its pod: TF Serving's versions (a failed load with TF Serving's error, a routed
version TF Serving does not report), the served counts, the API-key Secret's health, and TF
Serving going away."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
from kubernetes import client

from modelserving_sidecar.auth.api_keys import hash_api_key
from modelserving_sidecar.model.report import ANNOTATION
from tests.support.sidecar_process import running_sidecar
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)
from tests.support.waiting import wait_for_async

MODEL = "fraud"
KEY = "model-report-key"
POD = "fraud-pod"


async def test_the_sidecar_reports_tf_servings_versions_served_counts_and_auth_on_its_pod(
    local_env, kube_client, namespace, tmp_path
):
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=POD),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )

    def report() -> dict | None:
        annotations = core.read_namespaced_pod(POD, namespace).metadata.annotations or {}
        return json.loads(annotations.get(ANNOTATION) or "null")

    async def reported(check) -> dict:
        async def matches() -> dict | None:
            current = report()
            return current if current and check(current) else None

        return await wait_for_async(matches, 40, "the model report on the pod", interval=0.5)

    def versions_of(current: dict) -> dict[int, tuple]:
        return {
            v["version"]: (v["state"], v["errorCode"], v["served"]) for v in current["versions"]
        }

    model = StandInModel({v: StandInVersion(slope=0.0, intercept=float(v)) for v in (3, 4)})
    model.fail_load(4)
    keys = tmp_path / "apikeys"
    config = {
        "serving": {"name": MODEL, "namespace": namespace},
        "model": {"name": MODEL, "version": 3, "modelId": 21},
        "auth": {"mode": "apiKey", "apiKeysDir": str(keys), "kubeconfig": local_env.kubeconfig},
    }
    routing = {
        "versions": [
            {"version": 3, "weight": 90, "labels": ["stable"]},
            {"version": 4, "weight": 10, "labels": ["canary"]},
        ],
        "shadow": {"version": 5, "percent": 10},
    }
    async with contextlib.AsyncExitStack() as tf_serving:
        _, upstream = await tf_serving.enter_async_context(
            running_standin(TFServingStandIn({MODEL: model}))
        )
        config["upstream"] = {"url": upstream}
        async with running_sidecar(
            tmp_path, config, routing, POD_NAME=POD, POD_NAMESPACE=namespace
        ) as sidecar:
            # The canary failed to load, the shadow is not in TF Serving, the Secret is absent.
            first = await reported(lambda r: 4 in versions_of(r) and 3 in versions_of(r))
            assert first["server"] == {"reachable": True, "state": "up", "error": ""}
            assert versions_of(first) == {
                3: ("AVAILABLE", "OK", 0),
                4: ("END", "NOT_FOUND", 0),
                5: ("UNKNOWN", "", 0),
            }
            failed = next(v for v in first["versions"] if v["version"] == 4)
            assert failed["errorMessage"] == (
                "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
                "/models/half_plus_two/4"
            )
            assert first["auth"]["ready"] is False
            assert f"auth.apiKeysDir {keys} does not exist" in first["auth"]["error"]

            # The Secret appears: auth is ready; 20 predictions, all answered by version 3.
            keys.mkdir()
            (keys / "team-a").write_text(hash_api_key(KEY))
            await reported(lambda r: r["auth"] == {"ready": True, "error": ""})
            async with aiohttp.ClientSession() as http:
                for _ in range(20):
                    async with http.post(
                        f"{sidecar.url}/v1/models/{MODEL}:predict",
                        json={"instances": [0.0]},
                        headers={"Authorization": f"ApiKey {KEY}"},
                    ) as resp:
                        assert (resp.status, resp.headers["x-model-version"]) == (200, "3")
            # The canary loads: a change written at once, with the last minute's counts.
            model.make_available(4)
            loaded = await reported(lambda r: versions_of(r)[4][0] == "AVAILABLE")
            assert versions_of(loaded) == {
                3: ("AVAILABLE", "OK", 20),
                4: ("AVAILABLE", "OK", 0),
                5: ("UNKNOWN", "", 0),
            }

            # TF Serving goes away.
            await tf_serving.aclose()
            gone = await reported(lambda r: not r["server"]["reachable"])
            assert gone["server"]["error"] == "TF Serving is not reachable (connection refused)"
            assert gone["server"]["state"] == "down"  # it had answered: not starting
            assert {v["state"] for v in gone["versions"]} == {"UNKNOWN"}


async def test_the_first_report_waits_for_tf_servings_first_answer(
    local_env, kube_client, namespace, tmp_path
):
    """A TF Serving slow to answer its first status request is not reported unreachable: the
    operator would tell ServerUnavailable (a Warning Event, Ready False) for a pod that is fine."""
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=POD),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
        ),
    )
    seen: list[dict] = []

    async def report() -> dict | None:
        pod = await asyncio.to_thread(core.read_namespaced_pod, POD, namespace)
        current = json.loads((pod.metadata.annotations or {}).get(ANNOTATION) or "null")
        if current and current not in seen:
            seen.append(current)
        return current if current and current["versions"][0]["state"] == "AVAILABLE" else None

    config = {
        "serving": {"name": MODEL, "namespace": namespace},
        "model": {"name": MODEL, "version": 3, "modelId": 21},
        "auth": {"mode": "none", "kubeconfig": local_env.kubeconfig},
    }
    # Every answer takes a second, the first status answer too.
    slow = TFServingStandIn({MODEL: StandInModel((3,))}, delay_seconds=1.0)
    async with running_standin(slow) as (_, upstream):
        config["upstream"] = {"url": upstream}
        async with running_sidecar(tmp_path, config, None, POD_NAME=POD, POD_NAMESPACE=namespace):
            await wait_for_async(report, 40, "the report of version 3 AVAILABLE", interval=0.2)
    assert [r["server"] for r in seen] == [{"reachable": True, "state": "up", "error": ""}], seen
