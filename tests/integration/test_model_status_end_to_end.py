"""Status that says what is wrong, end to end with no hand-written report: the real operator
makes a serving's pod (KWOK runs it), the real sidecar process runs as that pod's sidecar
container would (the operator's rendered sidecar.yaml and routing.yaml, the pod's POD_NAME and
POD_NAMESPACE, a token of the serving's own ServiceAccount, so the rendered RBAC is what lets it
write), the TF Serving stand-in behind it loads the versions of the rendered models.config; and
what a user sees of the serving (its conditions, `kubectl get`, its Events, status.versions)
follows what TF Serving says: a TF Serving still starting (its ports closed until its first load,
as real TF Serving's are) is loading; one that stopped answering, never answered within the
serving's startup allowance, or was killed while it loaded is unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import yaml
from kubernetes import client

from modelserving import api
from tests.support.chart import named, render
from tests.support.pod_volumes import SidecarPod
from tests.support.ports import free_port
from tests.support.servings import condition, config_file, get_serving, serving_manifest
from tests.support.sidecar_process import running_sidecar
from tests.support.tfserving_config import parse_models_config
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)
from tests.support.waiting import wait_for, wait_for_async

# One operator for the tests that only make servings and look at what it does with them.
SHARED_OPERATOR = True

SERVING = "fraud"
MODEL = "fraud"
# A base path with nothing under it for the canary: TF Serving cannot load version 4.
BASE_PATH = "/models/does-not-exist/fraud"
REQUESTS = 400
T = TypeVar("T")
# The Events of what the pods report, in the order the test makes them happen.
MODEL_REASONS = (
    "ModelLoadFailed",
    "ModelLoading",
    "ServerUnavailable",
    "AllVersionsAvailable",
    "AuthConfigReady",
    "AuthConfigInvalid",
)


def install_sidecar_cluster_role(local_env) -> None:
    """The ClusterRole the operator binds to each serving's ServiceAccount (pods/status: patch),
    as the chart installs it under the name the operator binds by default."""
    role = named(
        render(local_env, release="modelserving"), "ClusterRole", "modelserving-sidecar-log-status"
    )
    assert role is not None, "the chart renders the sidecar-log-status ClusterRole"
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-"],
        input=yaml.safe_dump(role),
        env=local_env.tool_env(),
        check=True,
        capture_output=True,
        text=True,
    )


def service_account_kubeconfig(local_env, core, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig for the cluster with a TokenRequest token of `account`: what the pod's
    projected service account token lets its sidecar do."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    admin = yaml.safe_load(Path(local_env.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return str(path)


async def until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Wait for `check` (calls of the API server) in a thread: the stand-in serves on this
    event loop meanwhile."""
    return await wait_for_async(lambda: asyncio.to_thread(check), timeout, what, interval=0.3)


def the_servings_sidecar(
    local_env, core, apps, namespace: str, tmp_path: Path
) -> tuple[client.V1Pod, dict, dict, str]:
    """The serving's pod (made by KWOK) and what its sidecar container would run with: the
    rendered sidecar.yaml (with a kubeconfig of the serving's own ServiceAccount) and
    routing.yaml, and the rendered models.config of its TF Serving."""
    selector = f"{api.LABEL_INSTANCE}={SERVING}"
    (pod,) = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector=selector).items,
        60,
        "the serving's pod",
    )
    deployment = apps.read_namespaced_deployment(SERVING, namespace)
    sidecar_pod = SidecarPod(core, namespace, deployment, tmp_path / "pod")
    sidecar = next(c for c in deployment.spec.template.spec.containers if c.name == "sidecar")
    routing_file = sidecar.command[sidecar.command.index("--routing") + 1]
    routing_folder = sidecar_pod.folders[str(Path(routing_file).parent)]
    config = yaml.safe_load(sidecar_pod.config_text())
    routing = yaml.safe_load((routing_folder / Path(routing_file).name).read_text())
    models_config = config_file(core, apps, namespace, SERVING, "models.config")
    # The sidecar runs as the pod would run it: its pod's name, its ServiceAccount's token
    account = deployment.spec.template.spec.service_account_name
    config["auth"]["kubeconfig"] = service_account_kubeconfig(
        local_env, core, namespace, account, tmp_path / "kubeconfig"
    )
    return pod, config, routing, models_config


def ready_condition_because(crds, namespace: str, reason: str) -> dict | None:
    """The serving's Ready condition when its reason is `reason`, else None."""
    ready = condition(get_serving(crds, namespace, SERVING), "Ready")
    return ready if ready.get("reason") == reason else None


def serving_events(core, namespace: str, reason: str) -> list:
    """The Events of the serving with this reason."""
    return [
        e
        for e in core.list_namespaced_event(namespace).items
        if (e.involved_object.kind, e.involved_object.name) == (api.KIND, SERVING)
        and e.reason == reason
    ]


def standin_of(models_config: str) -> StandInModel:
    """TF Serving as the rendered models.config has it load the model: each version listed,
    each answering with its own number, under the config's base path."""
    (config,) = parse_models_config(models_config).model_config_list.config
    versions = config.model_version_policy.specific.versions
    assert config.name == MODEL
    return StandInModel(
        {v: StandInVersion(slope=0.0, intercept=float(v)) for v in versions},
        base_path=config.base_path,
    )


async def test_what_tf_serving_says_through_the_real_sidecar_is_the_servings_status(
    operator, crds, kube_client, local_env, namespace, tmp_path
):
    install_sidecar_cluster_role(local_env)
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)

    # Given a canary serving (version 3 at 90%, version 4 at 10%, version 5 shadowing 10% of the
    # requests) and its pod, made by KWOK
    manifest = serving_manifest(SERVING, auth={"mode": "none"}, logging={"enabled": False})
    manifest["spec"]["model"] = {
        "name": MODEL,
        "basePath": BASE_PATH,
        "versions": [
            {"version": 3, "weight": 90, "labels": ["stable"]},
            {"version": 4, "weight": 10, "labels": ["canary"]},
        ],
        "shadow": {"version": 5, "percent": 10},
    }
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    pod, config, routing, tf_config = the_servings_sidecar(
        local_env, core, apps, namespace, tmp_path
    )
    model = standin_of(tf_config)
    # TF Serving finds no version of the model under its base path (yet)
    loadable = dict(model.served)
    model.served.clear()
    port = free_port()
    config["upstream"] = {**config.get("upstream", {}), "url": f"http://127.0.0.1:{port}"}

    def status() -> dict:
        return get_serving(crds, namespace, SERVING).get("status") or {}

    def ready_because(reason: str) -> dict | None:
        return ready_condition_because(crds, namespace, reason)

    def events(reason: str) -> list:
        return serving_events(core, namespace, reason)

    async with contextlib.AsyncExitStack() as tf_serving:
        # TF Serving starts: as real TF Serving, it opens its ports only once its first load
        # is done
        standin = TFServingStandIn({MODEL: model}, starting=True)
        await tf_serving.enter_async_context(running_standin(standin, port=port))
        async with running_sidecar(
            tmp_path, config, routing, POD_NAME=pod.metadata.name, POD_NAMESPACE=namespace
        ) as running:
            # Then the serving is loading, not down: ModelLoading, told by a Normal Event
            starting = await until(lambda: ready_because("ModelLoading"), 60, "ModelLoading")
            assert (starting["status"], starting["message"]) == (
                "False",
                (
                    f"TF Serving is starting and loading the model in {pod.metadata.name} (it "
                    "opens its ports once the model is loaded; until then: TF Serving is not "
                    "reachable (connection refused))"
                ),
            )
            (told,) = await until(lambda: events("ModelLoading"), 30, "the Event")
            assert told.type == "Normal" and "is starting and loading" in told.message
            assert not events("ServerUnavailable")

            # When TF Serving's first load is done, and it found no version of the model
            await standin.finish_starting()

            # Then the serving is not Ready: ModelLoadFailed with TF Serving's own 404
            nothing = await until(lambda: ready_because("ModelLoadFailed"), 60, "ModelLoadFailed")
            assert f"Could not find any versions of model {MODEL}" in nothing["message"]

            # When version 3's files are found, and the canary's are not a SavedModel
            model.served.update(loadable)
            model.fail_load(4)
            tf_serving_error = model.served[4].error_message
            assert BASE_PATH in tf_serving_error

            # Then the serving is still not Ready: ModelLoadFailed with TF Serving's message
            failed = await until(
                lambda: (
                    (c := ready_because("ModelLoadFailed"))
                    and tf_serving_error in c["message"]
                    and c
                ),
                60,
                "ModelLoadFailed of version 4",
            )
            assert failed["status"] == "False"
            canary = next(v for v in status()["versions"] if v["version"] == 4)
            assert (canary["state"], canary["message"]) == ("END", tf_serving_error)
            # And kubectl get says it is not Ready, why in its Status column, though its one
            # replica is ready (the stable version serves)
            table = local_env.kubectl("get", "modelservings", "-n", namespace).stdout.split("\n")
            column = table[0].index("READY")  # columns by offset: TRAFFIC holds spaces
            assert table[0][column:].split()[:3] == ["READY", "STATUS", "REPLICAS"], table
            assert table[1][column:].split()[:3] == ["False", "ModelLoadFailed", "1/1"], table
            # And one Warning Event told it, when the reason first became ModelLoadFailed
            (told,) = await until(lambda: events("ModelLoadFailed"), 30, "the Event")
            assert told.type == "Warning" and f"versions of model {MODEL}" in told.message

            # When the canary's files are taken away: TF Serving no longer lists version 4
            canary_version = model.served.pop(4)
            missing = await until(lambda: ready_because("ModelLoading"), 60, "ModelLoading")
            assert missing["message"] == (
                f"TF Serving in {pod.metadata.name} reports no version 4: it loads it once "
                f"{BASE_PATH}/4 holds a SavedModel"
            )

            # When they are back and TF Serving is loading them
            model.served[4] = canary_version
            model.hold_loading(4)
            loading = await until(
                lambda: (c := ready_because("ModelLoading")) and "is LOADING" in c["message"] and c,
                60,
                "ModelLoading of version 4",
            )
            assert loading["message"] == f"version 4 is LOADING in {pod.metadata.name}"

            # When TF Serving goes away
            await tf_serving.aclose()
            gone = await until(lambda: ready_because("ServerUnavailable"), 60, "ServerUnavailable")
            assert "TF Serving is not reachable (connection refused)" in gone["message"]

            # When it is back with both versions AVAILABLE
            model.make_available(4)
            await tf_serving.enter_async_context(running_standin(standin, port=port))
            back = await until(lambda: ready_because("Available"), 60, "Ready again")
            assert back["status"] == "True"

            # And callers are served by both versions, as weighed
            answered: Counter[str] = Counter()
            async with aiohttp.ClientSession() as http:
                for _ in range(REQUESTS):
                    async with http.post(
                        f"{running.url}/v1/models/{MODEL}:predict", json={"instances": [0.0]}
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        answered[resp.headers["x-model-version"]] += 1
            # Then status.versions shows the share each really served (within the minute), of
            # the callers' answers: the shadow's copies are not counted
            assert set(answered) == {"3", "4"}
            expected = {
                3: round(100 * answered["3"] / REQUESTS),
                4: round(100 * answered["4"] / REQUESTS),
                5: 0,
            }

            def served() -> dict[int, int] | None:
                shares = {v["version"]: v.get("servedPercent") for v in status()["versions"]}
                return shares if shares == expected else None

            # Counts alone are written at most every 30 s (the sidecar's refresh): 90 s leaves
            # a busy machine room.
            await until(served, 90, f"status.versions to show {expected} served")
            assert 5 <= expected[4] <= 15, answered  # 90/10 within a binomial bound
            states = {
                v["version"]: (v["weight"], v["role"], v["state"]) for v in status()["versions"]
            }
            assert states == {
                3: (90, "stable", "AVAILABLE"),
                4: (10, "canary", "AVAILABLE"),
                5: (0, "shadow", "AVAILABLE"),
            }
            # And the sidecar reports the weights it applies, the spec's: no split is pending
            reported = core.read_namespaced_pod(pod.metadata.name, namespace).metadata
            weights = json.loads(reported.annotations[api.MODEL_REPORT_ANNOTATION])["weights"]
            assert weights == {"3": 90, "4": 10}
            progressing = condition(get_serving(crds, namespace, SERVING), "Progressing")
            assert progressing["reason"] == "RolloutComplete", progressing
            # And the shadow did get its copies, as TF Serving saw them
            copies = [r for r in standin.forwarded if "/versions/5:" in r.path]
            assert 0 < len(copies) < REQUESTS / 4, len(copies)

    # And each change of what the pods say was told once: the auth configuration usable at the
    # first report, then the model's states (loading while TF Serving started, and again while
    # the canary's files were missing), TF Serving down only once it had answered, and nothing
    # more
    told: Counter[tuple[str, str]] = Counter()
    for reason in MODEL_REASONS:
        for e in serving_events(core, namespace, reason):
            told[e.type, e.reason] += e.count or 1
    assert told == {
        ("Normal", "ModelLoading"): 2,
        ("Warning", "ModelLoadFailed"): 1,
        ("Warning", "ServerUnavailable"): 1,
        ("Normal", "AllVersionsAvailable"): 1,
        ("Normal", "AuthConfigReady"): 1,
    }


async def test_a_tf_serving_that_does_not_answer_within_the_startup_allowance_is_unavailable(
    operator, crds, kube_client, local_env, namespace, tmp_path
):
    install_sidecar_cluster_role(local_env)
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)

    # Given a serving that allows its TF Serving 5 s to load the model
    manifest = serving_manifest(SERVING, auth={"mode": "none"}, logging={"enabled": False})
    manifest["spec"]["model"] = {
        "name": MODEL,
        "basePath": BASE_PATH,
        "versions": [{"version": 3, "weight": 100}],
    }
    manifest["spec"]["server"] = {"startupAllowanceSeconds": 5}
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    pod, config, routing, tf_config = the_servings_sidecar(
        local_env, core, apps, namespace, tmp_path
    )
    assert config["upstream"]["startupAllowanceSeconds"] == 5
    port = free_port()
    config["upstream"]["url"] = f"http://127.0.0.1:{port}"

    # When its TF Serving never finishes its first load (its ports stay closed)
    standin = TFServingStandIn({MODEL: standin_of(tf_config)}, starting=True)
    async with (
        running_standin(standin, port=port),
        running_sidecar(
            tmp_path, config, routing, POD_NAME=pod.metadata.name, POD_NAMESPACE=namespace
        ),
    ):
        # Then, the allowance passed, the serving says TF Serving is unavailable, and why
        down = await until(
            lambda: ready_condition_because(crds, namespace, "ServerUnavailable"),
            60,
            "ServerUnavailable",
        )
        assert down["message"] == (
            f"TF Serving does not answer in {pod.metadata.name}: TF Serving is not reachable "
            "(connection refused); it has not answered once in the 5 s startup allowance since "
            "the pod started (TF Serving opens its ports once it has loaded the model: its log "
            "says what holds it)"
        )
        # And a Warning Event told it
        (told,) = await until(
            lambda: serving_events(core, namespace, "ServerUnavailable"), 30, "the Event"
        )
        assert told.type == "Warning"


async def test_a_tf_serving_killed_while_it_loads_is_unavailable_before_the_allowance(
    operator, crds, kube_client, local_env, namespace, tmp_path
):
    install_sidecar_cluster_role(local_env)
    core, apps = client.CoreV1Api(kube_client), client.AppsV1Api(kube_client)

    # Given a serving with the default startup allowance, whose TF Serving is loading the model
    manifest = serving_manifest(SERVING, auth={"mode": "none"}, logging={"enabled": False})
    manifest["spec"]["model"] = {
        "name": MODEL,
        "basePath": BASE_PATH,
        "versions": [{"version": 3, "weight": 100}],
    }
    crds.create_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, manifest)
    pod, config, routing, tf_config = the_servings_sidecar(
        local_env, core, apps, namespace, tmp_path
    )
    port = free_port()
    config["upstream"]["url"] = f"http://127.0.0.1:{port}"
    standin = TFServingStandIn({MODEL: standin_of(tf_config)}, starting=True)
    async with (
        running_standin(standin, port=port),
        running_sidecar(
            tmp_path, config, routing, POD_NAME=pod.metadata.name, POD_NAMESPACE=namespace
        ),
    ):
        await until(
            lambda: ready_condition_because(crds, namespace, "ModelLoading"),
            60,
            "ModelLoading while TF Serving starts",
        )

        # When the kubelet finds its TF Serving killed for memory, and restarts it (as the
        # kubelet writes it on the pod's status)
        statuses = [
            {
                "name": "tfserving",
                "image": "tensorflow/serving",
                "imageID": "",
                "ready": False,
                "restartCount": 1,
                "state": {"running": {}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            },
            {
                "name": "sidecar",
                "image": "modelserving",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"running": {}},
            },
        ]
        core.patch_namespaced_pod_status(
            pod.metadata.name, namespace, {"status": {"containerStatuses": statuses}}
        )

        # Then the serving says TF Serving is unavailable at once, and how it ended
        down = await until(
            lambda: ready_condition_because(crds, namespace, "ServerUnavailable"),
            60,
            "ServerUnavailable",
        )
        assert down["message"].endswith(
            f"TF Serving in {pod.metadata.name} exited before it answered once (OOMKilled, "
            f"exit code 137): kubectl logs {pod.metadata.name} -c tfserving --previous says why"
        ), down
        (told,) = await until(
            lambda: serving_events(core, namespace, "ServerUnavailable"), 30, "the Event"
        )
        assert told.type == "Warning"
