#!/usr/bin/env python3
"""A short run of real parts for the chart's dashboard picture (`make dashboard-picture`): the
parts the monitoring test uses (the local cluster and broker, the real operator under the
chart's ServiceAccount, the real sidecar process with its inference log on the broker, the TF
Serving stand-in, the real activator under the chart's ServiceAccount, Debian's Prometheus
scraping the sidecar, the operator and the activator every second), a serving of two
versions, `fraud`, and a few minutes of traffic in phases:

1. steady traffic, 90/10 between version 1 (stable) and 2 (canary): predictions, a few
   regressions, some bad bodies (400) and calls without a key (401);
2. the canary slows past the sidecar's upstream timeout: its share answers 504;
3. the canary recovers and the ModelServing's weights move to 50/50: the operator reconciles
   and re-renders routing.yaml, which the sidecar re-reads (written as the kubelet would);
4. the broker hangs (SIGSTOP) for a while: records wait in the spool, then drain;
5. steady traffic to the end.

Beside them, a serving that scales to zero, `disputes` (tests/support/process_node: its pods
land on a node whose pod addresses this machine serves, and tests/support/pod_processes runs
a real sidecar at each Ready pod's address, as its kubelet would). Idle, the operator's
autoscaler takes it to zero, and its Service's endpoints become the activator's (a pod of
that node too, the activator bound at its address). At a few moments of the run
(WAKE_BURSTS) a burst of requests for it reaches the activator: held, they wake it (the
activator scales its Deployment 0 -> 1) and are forwarded to the new pod's sidecar; a few
without a key beside them are refused 401 before anything wakes. Idle again, it goes back
to zero before the next burst.

Then tools/dashboard_picture.py draws the dashboard from that Prometheus (namespace
`payments`, every serving) into charts/modelserving/docs/dashboard.svg and .png. Everything
it started is stopped; the local environment is stopped too unless it was up before.

    python tools/dashboard_run.py [--seconds 240] [--rate 25] [--out PATH_WITHOUT_SUFFIX]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: the repository's root holds tools/ and tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import yaml
from kubernetes import client, config

from modelserving import api
from modelserving_sidecar.auth.api_keys import hash_api_key
from tests.support.activator_process import ActivatorProcess, running_activator
from tests.support.chart_account import activator_kubeconfig, operator_kubeconfig
from tests.support.environment import KafkaBroker, LocalEnv, localenv
from tests.support.operator_process import COUNTER_NAMESPACE, Operator
from tests.support.pod_processes import serving_pods
from tests.support.process_node import ProcessNode, delete_process_node, make_process_node
from tests.support.prometheus import PrometheusServer, Target
from tests.support.servings import config_file
from tests.support.sidecar_process import SidecarProcess, running_sidecar
from tests.support.tfserving_standin import (
    StandInModel,
    StandInVersion,
    TFServingStandIn,
    running_standin,
)
from tools.dashboard_picture import make_picture
from tools.dashboard_svg import TimeRange

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "charts" / "modelserving" / "docs" / "dashboard"
NAMESPACE, SERVING, MODEL, KEY = "payments", "fraud", "fraud", "dashboard-run-key"
SCRAPE_SECONDS = 1.0  # tests.support.prometheus's scrape interval
OPERATOR_JOB = "modelserving-operator"
# The serving that scales to zero, its model, and the activator's Service (and pod) name.
IDLE, IDLE_MODEL, ACTIVATOR = "disputes", "disputes", "activator"
IDLE_AFTER = 10  # its scaleToZeroAfterSeconds: the least the CRD allows, so it sleeps often
# When a burst reaches it at zero (shares of the run), how many held, how many without a key.
WAKE_BURSTS, BURST, KEYLESS = (0.08, 0.5, 0.86), 24, 4
UPSTREAM_TIMEOUT = 1.0  # the sidecar's; the slow canary takes longer
SLOW_CANARY = 1.5
# Each version's own time in TF Serving (the stand-in's delay), so the latency panels differ.
DELAYS = {1: 0.004, 2: 0.012}
# Phases as shares of the run: the canary slow, the weight change, the broker hung.
SLOW, RECOVER, REWEIGHT, HANG, RELEASE = 0.22, 0.38, 0.45, 0.62, 0.78


def say(text: str) -> None:
    print(f"[dashboard-run] {text}", file=sys.stderr, flush=True)


async def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await asyncio.to_thread(check)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.5)
    return found


def environment_up() -> tuple[LocalEnv, bool]:
    """The local environment (started by localenv's `up`), and whether it was up before."""
    was_up = localenv.settings_file().exists()
    subprocess.run([sys.executable, str(REPO / "localenv" / "localenv.py"), "up"], check=True)
    data = json.loads(localenv.settings_file().read_text())
    env = LocalEnv(
        kubeconfig=data["kubeconfig"],
        kafka_bootstrap=data["kafka_bootstrap"],
        bin_path=data["path"],
        kafka=localenv.KafkaListeners(**data["kafka"]),
    )
    return env, was_up


def serving_manifest(topic: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": SERVING},
        "spec": {
            "model": {
                "name": MODEL,
                "basePath": "s3://models/fraud",
                "versions": [
                    {"version": 1, "weight": 90, "labels": ["stable"]},
                    {"version": 2, "weight": 10, "labels": ["canary"]},
                ],
            },
            "auth": {"mode": "apiKey", "apiKeys": {"secretName": f"{SERVING}-keys"}},
            "logging": {"kafka": {"topic": topic}},
        },
    }


def idle_serving_manifest(node: ProcessNode) -> dict[str, Any]:
    """`disputes`: one version, no inference log, its pods on the process node, scaled on
    concurrency down to zero after IDLE_AFTER seconds without a request."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": IDLE},
        "spec": {
            "model": {"name": IDLE_MODEL, "version": 1, "basePath": "s3://models/disputes"},
            "auth": {"mode": "apiKey", "apiKeys": {"secretName": f"{IDLE}-keys"}},
            "logging": {"enabled": False},
            "sidecar": {"grpc": {"enabled": False}},
            "server": node.placement(),
            "autoscaling": {
                "enabled": True,
                "metric": "concurrency",
                "minReplicas": 0,
                "maxReplicas": 1,
                "scaleToZeroAfterSeconds": IDLE_AFTER,
            },
        },
    }


class Cluster:
    """The run's objects on the local cluster, through the admin's client."""

    def __init__(self, env: LocalEnv) -> None:
        self.env = env
        self.api = config.new_client_from_config(config_file=env.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.objects = client.CustomObjectsApi(self.api)

    def install_crds(self) -> None:
        self.env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        self.env.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{api.PLURAL}.{api.GROUP}",
            "crd/kopfpeerings.kopf.dev",
        )

    def fresh_namespace(self, name: str) -> bool:
        """Create `name` once an earlier run's is gone; True once created."""
        phase = self.env.kubectl(
            "get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False
        )
        if phase.returncode == 0:
            if phase.stdout != "Terminating":
                self.env.kubectl("delete", "namespace", name, "--wait=false")
            return False
        return self.env.kubectl("create", "namespace", name, check=False).returncode == 0

    def serving(self) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.objects.get_namespaced_custom_object(
                api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, SERVING
            ),
        )

    def ready(self) -> dict[str, Any] | None:
        serving = self.serving()
        status = serving.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        generation = serving["metadata"]["generation"]
        done = conditions.get("Ready") == "True" and status.get("observedGeneration") == generation
        return serving if done else None

    def replicas(self, name: str) -> int:
        scale = self.apps.read_namespaced_deployment_scale(name, NAMESPACE)
        return int(scale.spec.replicas or 0)

    def activator_pod(self, node: ProcessNode) -> str | None:
        """A pod and a Service named as the activator's, the pod on the process node, where the
        run binds the real activator (as the chart's activator Deployment and Service are);
        the pod's address once it has one."""
        labels = {"app": ACTIVATOR}
        try:
            pod = self.core.read_namespaced_pod(f"{ACTIVATOR}-0", NAMESPACE)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_pod(
                NAMESPACE,
                {
                    "metadata": {"name": f"{ACTIVATOR}-0", "labels": labels},
                    "spec": {
                        "containers": [{"name": ACTIVATOR, "image": "modelserving"}],
                        **node.placement(),
                    },
                },
            )
            port = {"name": "http", "port": api.SIDECAR_PORT}
            service = {
                "metadata": {"name": ACTIVATOR},
                "spec": {"selector": labels, "ports": [port]},
            }
            self.core.create_namespaced_service(NAMESPACE, service)
            return None
        return str(pod.status.pod_ip) if pod.status.pod_ip else None

    def routing(self) -> dict[str, Any]:
        """routing.yaml as the operator rendered it into a ConfigMap the pod template mounts
        (its versions ConfigMap; the sidecar's own is named by its content)."""
        rendered = config_file(self.core, self.apps, NAMESPACE, SERVING, "routing.yaml")
        if rendered is None:
            raise RuntimeError(f"{SERVING}'s pods mount no routing.yaml")
        return dict(yaml.safe_load(rendered))


async def send(http: aiohttp.ClientSession, base: str, index: int, codes: Counter[int]) -> None:
    """One request of the mix: mostly predictions, some regressions, bad bodies and keyless."""
    good = {"Authorization": f"ApiKey {KEY}", "Content-Type": "application/json"}
    kind = index % 40
    if kind == 0:
        verb, body, headers = "predict", b"{broken", good
    elif kind in (1, 2):
        verb, body, headers = "predict", b'{"instances": [1.0]}', {}
    elif kind % 4 == 3:
        verb, body, headers = "regress", b'{"examples": [{"x": 1.5}, {"x": 2.5}]}', good
    else:
        x = round(random.uniform(0, 10), 2)
        verb, body, headers = "predict", json.dumps({"instances": [x, x + 1]}).encode(), good
    try:
        async with http.post(f"{base}/v1/models/{MODEL}:{verb}", data=body, headers=headers) as r:
            await r.read()
            codes[r.status] += 1
    except aiohttp.ClientError:
        codes[0] += 1


async def traffic(base: str, rate: float, until: float, codes: Counter[int]) -> None:
    """Requests at `rate` per second until `until` (monotonic), not waiting for answers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        pending: set[asyncio.Task[None]] = set()
        index, started = 0, time.monotonic()
        while (now := time.monotonic()) < until:
            while index < (now - started) * rate:
                task = asyncio.create_task(send(http, base, index, codes))
                pending.add(task)
                task.add_done_callback(pending.discard)
                index += 1
            await asyncio.sleep(0.02)
        if pending:
            await asyncio.wait(pending, timeout=UPSTREAM_TIMEOUT + 10)


async def start_operator(env: LocalEnv, cluster: Cluster, workdir: Path) -> tuple[Operator, int]:
    """The CRDs, a fresh namespace, and the operator watching it as the chart's ServiceAccount
    with its metrics on a port of its own; the operator and that port."""
    await asyncio.to_thread(cluster.install_crds)
    env.kubectl("create", "namespace", COUNTER_NAMESPACE, check=False)
    await wait_until(
        lambda: cluster.fresh_namespace(NAMESPACE), 120, f"namespace {NAMESPACE} of a run to go"
    )
    kubeconfig = await asyncio.to_thread(
        operator_kubeconfig, env, COUNTER_NAMESPACE, NAMESPACE, workdir / "operator.kubeconfig"
    )
    port = localenv.free_port()
    # The activator's Service: a serving at zero's endpoints are its pods'.
    flags = ["--metrics-port", str(port), "--activator-service", f"{NAMESPACE}/{ACTIVATOR}"]
    operator = Operator(env, NAMESPACE, workdir, flags, kubeconfig=kubeconfig)
    operator.start()
    say(f"operator watching {NAMESPACE}, as the chart's ServiceAccount (log: {workdir})")
    return operator, port


def api_keys(workdir: Path) -> Path:
    """The folder of API keys both servings' sidecars read (as the operator mounts a serving's
    key Secret): KEY's hash."""
    keys = workdir / "keys"
    keys.mkdir()
    (keys / "team-a").write_text(hash_api_key(KEY))
    return keys


def sidecar_config(
    env: LocalEnv, serving: dict[str, Any], upstream: str, workdir: Path, keys: Path
) -> dict[str, Any]:
    """The sidecar's settings as the operator would render them for this serving, with folders
    of the run's own."""
    return {
        "serving": {"name": SERVING, "namespace": NAMESPACE},
        "model": {"name": MODEL, "version": 1, "modelId": serving["status"].get("modelId", 1)},
        "upstream": {"url": upstream, "timeoutSeconds": UPSTREAM_TIMEOUT},
        "auth": {"mode": "apiKey", "apiKeysDir": str(keys)},
        "logging": {
            "mode": "ALL",
            "topic": serving["spec"]["logging"]["kafka"]["topic"],
            "bootstrapServers": env.kafka_bootstrap,
            "spoolDir": str(workdir / "spool"),
        },
    }


def idle_pod_config(rendered: str, upstream: str, keys: Path) -> dict[str, Any]:
    """The sidecar.yaml the operator rendered for `disputes`, with TF Serving the stand-in and
    the run's keys folder (as the demo runs a pod's containers)."""
    config = dict(yaml.safe_load(rendered))
    config["upstream"] = {**config["upstream"], "url": upstream}
    config["auth"] = {**config["auth"], "apiKeysDir": str(keys)}
    return config


async def start_idle_serving(
    env: LocalEnv,
    cluster: Cluster,
    stack: contextlib.AsyncExitStack,
    upstream: str,
    keys: Path,
    workdir: Path,
) -> ActivatorProcess:
    """`disputes` made by the operator, its pods' sidecars run as their kubelet would, and the
    activator at its pod's address; returns once `disputes` has gone to zero."""
    node = await asyncio.to_thread(make_process_node, cluster.api, localenv.CLUSTER_NAME)
    stack.callback(delete_process_node, cluster.api, node)
    cluster.objects.create_namespaced_custom_object(
        api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, idle_serving_manifest(node)
    )
    rendered = await wait_until(
        lambda: config_file(cluster.core, cluster.apps, NAMESPACE, IDLE, "sidecar.yaml"),
        60,
        f"the operator to render {IDLE}'s sidecar.yaml",
    )
    pod_config = idle_pod_config(rendered, upstream, keys)
    await stack.enter_async_context(
        serving_pods(cluster.core, NAMESPACE, IDLE, workdir / IDLE, lambda pod: pod_config)
    )
    address = await wait_until(lambda: cluster.activator_pod(node), 60, "the activator's pod")
    kubeconfig = await asyncio.to_thread(
        activator_kubeconfig, env, COUNTER_NAMESPACE, workdir / "activator.kubeconfig"
    )
    (workdir / ACTIVATOR).mkdir()
    activator = await stack.enter_async_context(
        running_activator(
            workdir / ACTIVATOR,
            str(kubeconfig),
            NAMESPACE,
            host=address,
            port=api.SIDECAR_PORT,
        )
    )
    await wait_until(lambda: cluster.replicas(IDLE) == 0, 120, f"{IDLE} to go to zero")
    say(f"{NAMESPACE}/{IDLE} at zero; the activator at {activator.url} (log: {workdir})")
    return activator


def start_prometheus(
    workdir: Path, sidecar: SidecarProcess, operator_port: int, activator: ActivatorProcess
) -> PrometheusServer:
    """Prometheus scraping the sidecar with the labels the chart's ServiceMonitor gives a
    serving's pod, the operator and the activator (their own labels kept)."""
    (workdir / "prometheus").mkdir()
    pod = {"namespace": NAMESPACE, "serving": SERVING, "pod": f"{SERVING}-7d9f8-x2kq"}
    prometheus = PrometheusServer(
        workdir / "prometheus",
        localenv.free_port(),
        [
            Target("modelserving-sidecar", sidecar.url.removeprefix("http://"), labels=pod),
            Target(OPERATOR_JOB, f"127.0.0.1:{operator_port}"),
            Target("modelserving-activator", activator.url.removeprefix("http://")),
        ],
    )
    prometheus.start()
    return prometheus


async def run(seconds: float, rate: float, out: Path, workdir: Path) -> None:
    env, was_up = await asyncio.to_thread(environment_up)
    cluster = Cluster(env)
    broker = KafkaBroker()  # the shared one: this run is alone on the environment
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(lambda: None if was_up else localenv.down())
        stack.callback(cluster.api.close)
        stack.callback(env.kubectl, "delete", "namespace", NAMESPACE, "--wait=false", check=False)
        stack.callback(broker.resume)  # should the run end while the broker hangs
        operator, operator_port = await start_operator(env, cluster, workdir)
        stack.callback(operator.stop)
        cluster.objects.create_namespaced_custom_object(
            api.GROUP, api.VERSION, NAMESPACE, api.PLURAL, serving_manifest(f"{SERVING}-inference")
        )
        serving = await wait_until(cluster.ready, 120, f"serving {SERVING} Ready")
        say(f"serving {NAMESPACE}/{SERVING} Ready, modelId {serving['status'].get('modelId')}")

        model = StandInModel({v: StandInVersion(delay_seconds=d) for v, d in DELAYS.items()})
        models = {MODEL: model, IDLE_MODEL: StandInModel((1,))}
        standin, upstream = await stack.enter_async_context(
            running_standin(TFServingStandIn(models))
        )
        standin.record = False
        keys = api_keys(workdir)
        config = sidecar_config(env, serving, upstream, workdir, keys)
        sidecar = await stack.enter_async_context(
            running_sidecar(workdir / "sidecar", config, cluster.routing())
        )
        activator = await start_idle_serving(env, cluster, stack, upstream, keys, workdir)
        prometheus = await asyncio.to_thread(
            start_prometheus, workdir, sidecar, operator_port, activator
        )
        stack.callback(prometheus.stop)

        say(f"Prometheus on {prometheus.url}; traffic for {seconds:.0f} s at {rate} rps")
        start, began = time.time(), time.monotonic()
        codes: Counter[int] = Counter()
        idle_codes: Counter[int] = Counter()
        sending = asyncio.create_task(traffic(sidecar.url, rate, began + seconds, codes))
        await asyncio.gather(
            phases(cluster, broker, model, sidecar, began, seconds),
            wakes(cluster, activator, began, seconds, idle_codes),
        )
        await sending
        say(f"answers by code: {dict(sorted(codes.items()))}")
        say(f"{IDLE}'s answers through the activator by code: {dict(sorted(idle_codes.items()))}")
        await asyncio.sleep(3 * SCRAPE_SECONDS)  # the last answers scraped

        note = (
            "Rendered by tools/dashboard_picture.py (make dashboard-picture) from a real run: "
            f"the operator, {SERVING}'s sidecar and its inference log on Kafka, the activator "
            f"waking {IDLE} from zero, scraped by Prometheus every {SCRAPE_SECONDS:g} s; "
            "TF Serving is the project's stand-in."
        )
        # Every serving of the namespace: `fraud` fills the requests rows, `disputes` the
        # scale to zero row (its woken pods' sidecars are not scraped).
        chosen = {"namespace": NAMESPACE, "operator_job": OPERATOR_JOB}
        span = TimeRange(start, time.time())
        svg, png = await asyncio.to_thread(
            make_picture, prometheus.url, span, chosen, out, note, SCRAPE_SECONDS
        )
        say(f"wrote {svg} and {png} ({png.stat().st_size // 1024} KiB)")


async def at(began: float, seconds: float, share: float, what: str) -> None:
    """Wait for `share` of the run that began at `began` (monotonic) and lasts `seconds`; say
    what happens then."""
    await asyncio.sleep(max(0.0, began + share * seconds - time.monotonic()))
    clock = time.strftime("%H:%M:%S", time.gmtime())
    say(f"{time.monotonic() - began:5.0f} s ({clock} UTC): {what}")


async def phases(
    cluster: Cluster,
    broker: KafkaBroker,
    model: StandInModel,
    sidecar: SidecarProcess,
    began: float,
    seconds: float,
) -> None:
    """Change what the system meets at the phases' times (see the module's docstring)."""
    canary = model.served[2]
    await at(
        began,
        seconds,
        SLOW,
        f"the canary slows to {SLOW_CANARY} s (upstream timeout {UPSTREAM_TIMEOUT} s)",
    )
    canary.delay_seconds = SLOW_CANARY
    await at(began, seconds, RECOVER, "the canary recovers")
    canary.delay_seconds = DELAYS[2]
    await at(began, seconds, REWEIGHT, "the ModelServing's weights move to 50/50")
    patch = {
        "spec": {
            "model": {
                "versions": [
                    {"version": 1, "weight": 50, "labels": ["stable"]},
                    {"version": 2, "weight": 50, "labels": ["canary"]},
                ]
            }
        }
    }
    await asyncio.to_thread(
        cluster.objects.patch_namespaced_custom_object,
        api.GROUP,
        api.VERSION,
        NAMESPACE,
        api.PLURAL,
        SERVING,
        patch,
    )
    rendered = await wait_until(
        lambda: (r := cluster.routing()) and {v["weight"] for v in r["versions"]} == {50} and r,
        60,
        "the operator to render routing.yaml with 50/50",
    )
    sidecar.set_routing(rendered)  # as the kubelet updates a mounted ConfigMap
    await at(began, seconds, HANG, "the Kafka broker hangs (SIGSTOP)")
    broker.pause()
    await at(began, seconds, RELEASE, "the Kafka broker resumes")
    broker.resume()


async def wakes(
    cluster: Cluster, activator: ActivatorProcess, began: float, seconds: float, codes: Counter[int]
) -> None:
    """At each of WAKE_BURSTS, once `disputes` is at zero: BURST requests for it at once at the
    activator (the address its Service's endpoints give at zero), held until the pod it wakes
    answers, and KEYLESS without a key, refused 401."""
    host = f"{IDLE}.{NAMESPACE}.svc:{api.SIDECAR_PORT}"  # what a caller of its Service sends
    url = f"{activator.url}/v1/models/{IDLE_MODEL}:predict"

    async def predict(http: aiohttp.ClientSession, x: float, key: bool) -> None:
        headers = {"Host": host, **({"Authorization": f"ApiKey {KEY}"} if key else {})}
        try:
            async with http.post(url, json={"instances": [x]}, headers=headers) as resp:
                await resp.read()
                codes[resp.status] += 1
        except aiohttp.ClientError:
            codes[0] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        for share in WAKE_BURSTS:
            await at(began, seconds, share, f"{BURST} requests for {IDLE} at the activator")
            await wait_until(lambda: cluster.replicas(IDLE) == 0, 90, f"{IDLE} back at zero")
            calls = [predict(http, float(i), key=True) for i in range(BURST)]
            calls += [predict(http, 0.0, key=False) for _ in range(KEYLESS)]
            await asyncio.gather(*calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=240, help="traffic for this long (240)")
    parser.add_argument("--rate", type=float, default=25, help="requests per second (25)")
    parser.add_argument("--out", type=Path, default=OUT, help="writes OUT.svg and OUT.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-run-") as workdir:
        # The whole run is bounded: setup, traffic, picture and teardown.
        asyncio.run(
            asyncio.wait_for(
                run(args.seconds, args.rate, args.out, Path(workdir)), args.seconds + 600
            )
        )


if __name__ == "__main__":
    main()
