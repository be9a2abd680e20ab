"""The activator (issue 36) on the local cluster: what it adds to a request on the warm path, how
long a request at zero waits beyond the pod's own ready time, and what holding a burst costs.

    python -m bench.comparisons.compare_activator [--seconds 4] [--rounds 2] [--rate 500]
        [--cold 10] [--burst 50] [--output bench/results-activator.json]

The parts (the local environment must be up: `make env-up`; no operator runs):
- the bench's TF Serving stand-in (nginx answering a fixed predict body,
  bench/baselines/nginx/upstream.conf) on core 0, with the load generators (wrk, vegeta);
- the real sidecar (apiKey, log off) on core 0 too, listening at 0.0.0.0 on a free port: every
  address of the local pod network (198.18.0.0/15, routed to this machine) reaches it, so a pod
  of the serving is served the moment KWOK reports it Ready (the stand-in that is ready at once);
- the real activator (`modelserving activator --pod-port <that port>`) alone on core 1, for the
  benchmark's namespace: the sidecar is on the path of both A and B below, the activator only
  on B's, so it alone is what B adds (each process's CPU is read from /proc, utime+stime);
- in the cluster: a ModelServing (the activator takes its Host names and auth mode from it) and a
  Deployment of its name whose pods land on a KWOK node of the benchmark's own, with a pod range
  in the pod network. The Deployment's scale is written by the activator (a wake) and by the
  benchmark (back to zero).

1. Warm path (one pod Ready): the sidecar called at its pod's address (A) and the same request
   through the activator with the serving's Host (B), in the order A B A ... A over --rounds, so
   that a shared machine's drift hits both alike; each B is set beside the mean of the A runs
   either side of it. Latency p50/p99 at --rate rps (vegeta, open loop) gives the activator's
   added latency; requests/s at saturation (wrk, 64 connections) with each process's CPU seconds
   gives requests/s per core (requests/s over its share of a core) and CPU per request.
2. Cold path, --cold times: the Deployment at 0 and its pod gone, one request to the activator.
   Watches of the Deployment and of its pods stamp each event on arrival; the pod's ready time
   runs from the scale becoming 1 (the activator's write) to the pod's Ready condition True (as
   the API server reports them), and the activator's share is the answer's time minus the pod's
   ready time (target: 50 ms or less): its read and write of the scale, its own watch seeing the
   pod Ready, the forward and the answer. Median and max. Beside it, the floor of the wake's
   part: the benchmark's own read and write of the scale (to zero, before each run) until its
   watch reports it, through the same API server, as loaded as the machine is.
3. Holding: --burst requests sent at once at zero: how many the model answered (200), the time
   to the first and the last answer, the pod's ready time, and the activator's CPU meanwhile.

Prints the figures with the machine's load average, and writes them as JSON (--output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from bench import REPO
from bench.harness import load
from bench.harness.environment import localenv_settings
from bench.harness.procs import LOAD_CORE, PROXY_CORE, BenchError, Proc, free_port, log
from bench.harness.stats import rps_per_core
from bench.harness.tools import Tools, vegeta_binary
from bench.parts.request_path import Bench, upstream
from bench.parts.sidecar import SidecarBench
from modelserving import api

SERVING = "scaled"
NODE = "bench-activator"
# The node's pod range: a /24 of the local pod network (localenv's POD_NETWORK) that the tests'
# process nodes (tests/support/process_node) may share; nothing binds their addresses at the
# sidecar's free port, so a shared range costs nothing.
POD_CIDR = "198.19.255.0/24"
WAIT_SECONDS = 60.0  # for the cluster to report a state (a pod gone, Ready)
WAKE_INTERVAL = 0.05  # seconds: less than any two cold runs are apart (start_activator)
# Longer than a run, so that no watch is opened again meanwhile (a new one starts with the
# pods as they are, and a pod it missed going would stay).
WATCH_SECONDS = 1800
OUTPUT = REPO / "bench" / "results-activator.json"


# ------------------------------------------------------------------ arithmetic


def bracketed(a_runs: Sequence[float], b_runs: Sequence[float]) -> list[float]:
    """Each B run's figure minus the mean of the A runs either side of it (A B A B ... A)."""
    if len(a_runs) != len(b_runs) + 1:
        raise ValueError(f"{len(a_runs)} A runs cannot bracket {len(b_runs)} B runs")
    return [b - (a_runs[i] + a_runs[i + 1]) / 2 for i, b in enumerate(b_runs)]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """The median, min and max of a figure over runs (a noisy run moves the median least)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


@dataclass(frozen=True)
class Wake:
    """One request (or burst) at zero, in monotonic seconds: sent, the Deployment's scale seen at
    1, its pod seen Ready, and the first and last answers."""

    sent: float
    scaled: float
    ready: float
    first_answer: float
    last_answer: float


def wake_figures(wake: Wake) -> dict[str, float]:
    """A wake's figures in ms: the pod's ready time (scale to Ready), and the activator's share of
    the wait (the last answer's time minus the pod's ready time), split into the wake (sent to
    scaled) and the forward (Ready to the last answer)."""
    ms = 1000.0
    pod_ready = (wake.ready - wake.scaled) * ms
    last = (wake.last_answer - wake.sent) * ms
    return {
        "first_answer_ms": round((wake.first_answer - wake.sent) * ms, 1),
        "answer_ms": round(last, 1),
        "pod_ready_ms": round(pod_ready, 1),
        "activator_share_ms": round(last - pod_ready, 1),
        "wake_ms": round((wake.scaled - wake.sent) * ms, 1),
        "after_ready_ms": round((wake.last_answer - wake.ready) * ms, 1),
    }


def per_core(
    rps: float, cpu_seconds: float, wall_seconds: float, requests: int
) -> dict[str, float]:
    """A process's requests/s per core and CPU µs per request over a saturation run."""
    return {
        "cpu_share": round(cpu_seconds / wall_seconds, 3),
        "rps_per_core": round(rps_per_core(rps, cpu_seconds, wall_seconds) or 0.0),
        "cpu_us_per_request": round(cpu_seconds / requests * 1e6, 1),
    }


# ------------------------------------------------------------------ the cluster


def node_manifest() -> dict[str, Any]:
    """A KWOK node (KWOK plays its kubelet) whose pods' addresses this machine serves; tainted,
    so only the serving's pods land there."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": NODE},
        },
        "spec": {
            "podCIDR": POD_CIDR,
            "podCIDRs": [POD_CIDR],
            "taints": [{"key": f"{api.GROUP}/{NODE}", "value": "true", "effect": "NoSchedule"}],
        },
    }


def serving_manifest() -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": SERVING},
        "spec": {
            "model": {"name": load.MODEL, "version": 1, "basePath": "s3://models/bench"},
            "auth": {"mode": "apiKey", "apiKeys": {"secretName": f"{SERVING}-keys"}},
        },
    }


def deployment_manifest(replicas: int) -> dict[str, Any]:
    """The serving's Deployment as the activator finds its pods (name, component, instance)."""
    labels = {
        api.LABEL_NAME: api.SERVING_APP_NAME,
        api.LABEL_COMPONENT: api.SERVING_COMPONENT,
        api.LABEL_INSTANCE: SERVING,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SERVING, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": api.SIDECAR_CONTAINER, "image": "modelserving"}],
                    "nodeSelector": {"kubernetes.io/hostname": NODE},
                    "tolerations": [{"key": f"{api.GROUP}/{NODE}", "operator": "Exists"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }


def pod_ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready and bool(pod.status.pod_ip) and pod.metadata.deletion_timestamp is None


class Watched:
    """The serving's Deployment scale and pods as two watches report them, each event stamped
    with time.monotonic() on arrival (the API server's own times are whole seconds)."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.apps = client.AppsV1Api(kube)
        self.core = client.CoreV1Api(kube)
        self.namespace = namespace
        self.lock = threading.Lock()
        self.replicas: list[tuple[float, int]] = []  # (arrival, spec.replicas)
        self.pods: dict[str, bool] = {}  # pod name -> usable (Ready, addressed, not going)
        self.ready_at: list[float] = []  # arrivals of a pod turning usable
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._keep, args=(self._deployments,), daemon=True),
            threading.Thread(target=self._keep, args=(self._pods,), daemon=True),
        ]

    def __enter__(self) -> Watched:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # the threads end at their watch's next event (daemons meanwhile)

    def _keep(self, follow: Callable[[watch.Watch], None]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a dropped watch is opened again
                follow(watch.Watch())

    def _deployments(self, w: watch.Watch) -> None:
        selector = f"metadata.name={SERVING}"
        for event in w.stream(
            self.apps.list_namespaced_deployment,
            self.namespace,
            field_selector=selector,
            timeout_seconds=WATCH_SECONDS,
        ):
            if self._stop.is_set():
                return
            with self.lock:
                self.replicas.append((time.monotonic(), int(event["object"].spec.replicas or 0)))

    def _pods(self, w: watch.Watch) -> None:
        for event in w.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=f"{api.LABEL_INSTANCE}={SERVING}",
            timeout_seconds=WATCH_SECONDS,
        ):
            if self._stop.is_set():
                return
            now, pod = time.monotonic(), event["object"]
            with self.lock:
                was = self.pods.get(pod.metadata.name, False)
                if event["type"] == "DELETED":
                    self.pods.pop(pod.metadata.name, None)
                else:
                    self.pods[pod.metadata.name] = pod_ready(pod)
                    if pod_ready(pod) and not was:
                        self.ready_at.append(now)

    def scaled_after(self, since: float) -> float | None:
        with self.lock:
            return next((t for t, n in self.replicas if t >= since and n > 0), None)

    def ready_after(self, since: float) -> float | None:
        with self.lock:
            return next((t for t in self.ready_at if t >= since), None)

    def at_zero(self) -> bool:
        with self.lock:
            return bool(self.replicas) and self.replicas[-1][1] == 0 and not self.pods

    def scale_seen(self, replicas: int) -> float:
        """Write the scale as the activator's wake does (read it, then write it back changed),
        and wait for the watch to report it: the seconds that took, the floor of a wake's."""
        for _ in range(5):  # the Deployment controller wrote meanwhile (409): read it again
            began = time.monotonic()
            scale = self.apps.read_namespaced_deployment_scale(SERVING, self.namespace)
            scale.spec.replicas = replicas
            try:
                self.apps.replace_namespaced_deployment_scale(SERVING, self.namespace, scale)
                break
            except ApiException as exc:
                if exc.status != 409:
                    raise
        else:
            raise BenchError(f"the scale could not be written to {replicas}: conflicts")

        def seen() -> float | None:
            with self.lock:
                return next((t for t, n in self.replicas if t >= began and n == replicas), None)

        return float(wait_for(f"the scale seen at {replicas}", seen)) - began


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll until `check` gives a value (not None or False), with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.02)


# ------------------------------------------------------------------ the processes


def start_sidecar(side: SidecarBench, port: int, namespace: str) -> Proc:
    """The sidecar (apiKey, log off) at 0.0.0.0:`port`: every pod address of the network."""
    path = side.render_config(port, "apiKey", None, side.bench.workdir / f"spool-{port}")
    rendered = json.loads(path.read_text())
    rendered["listen"]["host"] = "0.0.0.0"
    rendered["serving"] = {"name": SERVING, "namespace": namespace}
    path.write_text(json.dumps(rendered, indent=1))
    return side.process(path, port, "sidecar", core=LOAD_CORE)


def start_activator(workdir: Path, kubeconfig: str, namespace: str, pod_port: int) -> Proc:
    """`modelserving activator` for the namespace, forwarding to pods at `pod_port`, once ready
    (it has listed the servings and the pods).

    Its wakes are limited to one per WAKE_INTERVAL: the cold runs follow each other faster than
    the default 5 s allows (a serving's idle time is at least 10 s, so a real wake from zero is
    never held back by it), and a run held back would count the limiter's wait as the wake's."""
    port = free_port()
    cmd = [
        *(sys.executable, "-m", "modelserving.cli", "activator"),
        *("--kubeconfig", kubeconfig, "--namespace", namespace),
        *("--host", "0.0.0.0", "--port", str(port), "--pod-port", str(pod_port)),
        *("--grpc-port", "0"),  # REST alone is measured
        *("--wake-interval", str(WAKE_INTERVAL), "--hold-seconds", "30"),
        *("--log-level", "WARNING"),
    ]
    proc = Proc("activator", cmd, PROXY_CORE, workdir, port=port)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_for("the activator ready", ready)
    return proc


# ------------------------------------------------------------------ 1. warm path


def latency(bench: Bench, target: load.Target, rate: int, seconds: int) -> dict[str, float]:
    load.vegeta(bench.tools.vegeta, target, bench.workdir, rate, 1)  # warm-up
    lat = load.vegeta(bench.tools.vegeta, target, bench.workdir, rate, seconds)
    return {"p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms, "requests": lat.requests}


def saturation(
    bench: Bench, target: load.Target, seconds: int, procs: dict[str, Proc]
) -> dict[str, Any]:
    """wrk at saturation; each process's requests/s per core and CPU per request."""
    load.wrk(bench.tools.wrk, target, bench.workdir, seconds=1)  # warm-up
    before, began = {n: p.cpu_seconds() for n, p in procs.items()}, time.monotonic()
    sat = load.wrk(bench.tools.wrk, target, bench.workdir, seconds=seconds)
    wall = time.monotonic() - began
    used = {n: p.cpu_seconds() - before[n] for n, p in procs.items()}
    return {
        "rps": round(sat.rps),
        "requests": sat.requests,
        **{n: per_core(sat.rps, cpu, wall, sat.requests) for n, cpu in used.items()},
    }


def warm_path(
    bench: Bench,
    direct: load.Target,
    through: load.Target,
    procs: dict[str, Proc],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A B A ... A: the sidecar at its pod address (A), through the activator (B)."""
    a_runs: list[dict[str, Any]] = []
    b_runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds * 2 + 1):
        side_b = round_ % 2 == 1
        name, target = ("activator", through) if side_b else ("direct", direct)
        log(f"warm path, run {round_ + 1}: {name}")
        run = {
            **latency(bench, target, args.rate, args.seconds),
            "saturation": saturation(
                bench, target, args.seconds, procs if side_b else {"sidecar": procs["sidecar"]}
            ),
        }
        (b_runs if side_b else a_runs).append(run)

    def of(runs: list[dict[str, Any]], *keys: str) -> list[float]:
        values = []
        for run in runs:
            value: Any = run
            for key in keys:
                value = value[key]
            values.append(float(value))
        return values

    activator_sat = ("saturation", "activator")
    return {
        "rate": args.rate,
        "direct": {
            "p50_ms": summary(of(a_runs, "p50_ms")),
            "p99_ms": summary(of(a_runs, "p99_ms")),
            "rps": summary(of(a_runs, "saturation", "rps"), 0),
            "sidecar_rps_per_core": summary(of(a_runs, "saturation", "sidecar", "rps_per_core"), 0),
        },
        "through_activator": {
            "p50_ms": summary(of(b_runs, "p50_ms")),
            "p99_ms": summary(of(b_runs, "p99_ms")),
            "rps": summary(of(b_runs, "saturation", "rps"), 0),
            "activator_rps_per_core": summary(of(b_runs, *activator_sat, "rps_per_core"), 0),
            "activator_cpu_us_per_request": summary(
                of(b_runs, *activator_sat, "cpu_us_per_request"), 1
            ),
            "activator_cpu_share": summary(of(b_runs, *activator_sat, "cpu_share")),
        },
        "added_ms": {
            "p50": summary(bracketed(of(a_runs, "p50_ms"), of(b_runs, "p50_ms"))),
            "p99": summary(bracketed(of(a_runs, "p99_ms"), of(b_runs, "p99_ms"))),
        },
        "runs": {"direct": a_runs, "through_activator": b_runs},
    }


# ------------------------------------------------------------------ 2 and 3. at zero


async def send_at_once(target: load.Target, n: int, timeout: float) -> list[tuple[int, float]]:
    """`n` requests sent at once, each on its own connection: (status, answered at)."""
    timeouts = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=timeouts) as http:

        async def one() -> tuple[int, float]:
            async with http.post(
                target.url, data=target.body, headers=target.all_headers()
            ) as resp:
                await resp.read()
                return resp.status, time.monotonic()

        return await asyncio.gather(*(one() for _ in range(n)))


def from_zero(
    watched: Watched, target: load.Target, activator: Proc, n: int
) -> tuple[dict[str, float], list[int], float]:
    """Back to zero (the pod gone, as the watch reports), then `n` requests at once: the wake's
    figures (with the benchmark's own scale write to zero, as `scale_write_ms`), the answers'
    statuses, and the activator's CPU seconds meanwhile."""
    own_write = watched.scale_seen(0)
    wait_for("the serving at zero, its pod gone", watched.at_zero)
    cpu_before = activator.cpu_seconds()
    sent = time.monotonic()
    answers = asyncio.run(send_at_once(target, n, WAIT_SECONDS))
    cpu = activator.cpu_seconds() - cpu_before
    scaled = wait_for("the scale seen at 1", lambda: watched.scaled_after(sent), 5)
    ready = wait_for("the pod seen Ready", lambda: watched.ready_after(sent), 5)
    times = [t for _, t in answers]
    wake = Wake(sent, scaled, ready, min(times), max(times))
    figures = {**wake_figures(wake), "scale_write_ms": round(own_write * 1000, 1)}
    return figures, [status for status, _ in answers], cpu


def cold_path(watched: Watched, target: load.Target, activator: Proc, runs: int) -> dict[str, Any]:
    figures = []
    for run in range(runs):
        log(f"cold path, run {run + 1}")
        wake, statuses, _ = from_zero(watched, target, activator, 1)
        if statuses != [200]:
            raise BenchError(f"the request at zero got {statuses}")
        figures.append(wake)
    keys = (
        "answer_ms",
        "pod_ready_ms",
        "activator_share_ms",
        "wake_ms",
        "after_ready_ms",
        "scale_write_ms",
    )
    return {
        **{key: summary([f[key] for f in figures], 1) for key in keys},
        "target_activator_share_ms": 50,
        "runs": figures,
    }


def holding(watched: Watched, target: load.Target, activator: Proc, n: int) -> dict[str, Any]:
    log(f"holding: {n} requests at once at zero")
    wake, statuses, cpu = from_zero(watched, target, activator, n)
    return {
        "requests": n,
        "answered_200": statuses.count(200),
        "statuses": sorted(set(statuses)),
        **wake,
        "activator_cpu_ms": round(cpu * 1000, 1),
        "activator_cpu_ms_per_request": round(cpu * 1000 / n, 2),
    }


# ------------------------------------------------------------------ the run


@contextlib.contextmanager
def serving_at(kube: client.ApiClient, namespace: str) -> Iterator[None]:
    """The namespace with the ModelServing and its Deployment (1 replica), and the KWOK node;
    all deleted at the end."""
    core = client.CoreV1Api(kube)
    with contextlib.suppress(ApiException):
        core.delete_node(NODE)  # left by a run stopped before its end
    core.create_node(node_manifest())
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, serving_manifest()
        )
        client.AppsV1Api(kube).create_namespaced_deployment(namespace, deployment_manifest(1))
        yield
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)
        with contextlib.suppress(ApiException):
            core.delete_node(NODE)


def measure(bench: Bench, env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    kube = config.new_client_from_config(config_file=env["kubeconfig"])
    namespace = f"bench-activator-{uuid.uuid4().hex[:6]}"
    side = SidecarBench.prepare(bench, env, kubernetes=False)
    if not side.runnable:
        raise BenchError(side.why_not or "the sidecar cannot run")
    pod_port = free_port()
    with (
        upstream(bench),
        serving_at(kube, namespace),
        Watched(kube, namespace) as watched,
        contextlib.ExitStack() as procs,
    ):
        sidecar = start_sidecar(side, pod_port, namespace)
        procs.callback(sidecar.stop)
        activator = start_activator(bench.workdir, env["kubeconfig"], namespace, pod_port)
        procs.callback(activator.stop)
        address = wait_for("the pod Ready", lambda: ready_address(watched, namespace))
        direct = load.Target(pod_port, host=address, headers=side.headers("apiKey"))
        through = load.Target(
            int(activator.port or 0),
            headers={**side.headers("apiKey"), "Host": f"{SERVING}.{namespace}.svc"},
        )
        # Through the activator once: it has seen the pod Ready (else it holds it until then).
        statuses = asyncio.run(send_at_once(through, 1, WAIT_SECONDS))
        if statuses[0][0] != 200:
            raise BenchError(f"the warm request through the activator got {statuses[0][0]}")
        warm = warm_path(bench, direct, through, {"activator": activator, "sidecar": sidecar}, args)
        cold = cold_path(watched, through, activator, args.cold)
        held = holding(watched, through, activator, args.burst)
    return {"pod_address": address, "warm": warm, "cold": cold, "holding": held}


def ready_address(watched: Watched, namespace: str) -> str | None:
    pods = watched.core.list_namespaced_pod(
        namespace, label_selector=f"{api.LABEL_INSTANCE}={SERVING}"
    )
    return next((p.status.pod_ip for p in pods.items if pod_ready(p)), None)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(figures: dict[str, Any]) -> str:
    warm, cold, held = figures["warm"], figures["cold"], figures["holding"]
    d, t = warm["direct"], warm["through_activator"]
    lines = [
        f"load average: {figures['loadavg_before']} before, {figures['loadavg_after']} after",
        f"1. warm path, latency at {warm['rate']} rps, then saturated (medians; "
        f"{figures['rounds']} activator runs, each between two direct runs)",
        f"   direct to the pod      p50 {d['p50_ms']['median']:7.3f} ms  "
        f"p99 {d['p99_ms']['median']:7.3f} ms  saturated {d['rps']['median']:6.0f} rps, "
        f"sidecar {d['sidecar_rps_per_core']['median']:.0f} rps/core",
        f"   through the activator  p50 {t['p50_ms']['median']:7.3f} ms  "
        f"p99 {t['p99_ms']['median']:7.3f} ms  saturated {t['rps']['median']:6.0f} rps, "
        f"activator {t['activator_rps_per_core']['median']:.0f} rps/core "
        f"({t['activator_cpu_us_per_request']['median']:.0f} µs CPU/request, "
        f"{t['activator_cpu_share']['min']:.2f}-{t['activator_cpu_share']['max']:.2f} of its core)",
        f"   added by the activator p50 {warm['added_ms']['p50']['median']:+.3f} ms, "
        f"p99 {warm['added_ms']['p99']['median']:+.3f} ms",
        f"2. cold path, {len(cold['runs'])} runs (median / max)",
    ]
    for key, label in (
        ("answer_ms", "answer"),
        ("pod_ready_ms", "pod ready (scale 1 -> Ready)"),
        ("activator_share_ms", "activator's share (target <= 50)"),
        ("wake_ms", "  of it: sent -> scale 1"),
        ("after_ready_ms", "  of it: Ready -> answer"),
        ("scale_write_ms", "the bench's own scale write, seen"),
    ):
        lines.append(f"   {label:34} {cold[key]['median']:7.1f} / {cold[key]['max']:7.1f} ms")
    lines.append(
        f"3. holding {held['requests']} at zero: {held['answered_200']} answered 200; first "
        f"{held['first_answer_ms']:.0f} ms, last {held['answer_ms']:.0f} ms, pod ready "
        f"{held['pod_ready_ms']:.0f} ms, activator's share {held['activator_share_ms']:.0f} ms; "
        f"activator CPU {held['activator_cpu_ms']:.0f} ms "
        f"({held['activator_cpu_ms_per_request']:.2f} ms/request)"
    )
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> dict[str, int]:
    return {k: getattr(args, k) for k in ("seconds", "rounds", "rate", "cold", "burst")}


def figures_of(
    bench: Bench,
    env: dict[str, Any],
    *,
    seconds: int = 4,
    rounds: int = 2,
    rate: int = 500,
    cold: int = 10,
    burst: int = 50,
) -> dict[str, Any]:
    """The whole measurement (`measure`) with the load average before and after it and how
    it ran: what this command prints, and make bench's activator part."""
    options = argparse.Namespace(seconds=seconds, rounds=rounds, rate=rate, cold=cold, burst=burst)
    before = loadavg()
    figures = measure(bench, env, options)
    return {
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "rounds": rounds,
        "seconds": seconds,
        "cores": f"load, stand-in and sidecar on core {LOAD_CORE}; activator on core {PROXY_CORE}",
        **figures,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.comparisons.compare_activator", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=4, help="seconds of each load run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="warm path: B runs, each between two A runs"
    )
    parser.add_argument("--rate", type=int, default=500, help="warm path: latency at this rps")
    parser.add_argument("--cold", type=int, default=10, help="cold path: requests from zero")
    parser.add_argument("--burst", type=int, default=50, help="holding: requests at once at zero")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the figures as JSON")
    args = parser.parse_args(argv)
    env = localenv_settings()
    if env is None:
        raise SystemExit("the local environment is not up: make env-up")
    wrk, nginx, vegeta = shutil.which("wrk"), shutil.which("nginx"), vegeta_binary()
    if not wrk or not nginx or not vegeta.exists():
        raise SystemExit(f"wrk, nginx and vegeta ({vegeta}) are needed (make bench builds vegeta)")
    tools = Tools(
        nginx=nginx,
        wrk=wrk,
        vegeta=str(vegeta),
        kserve_agent="",
        py_spy=None,
        pylib=None,
        ghz="",
        grpc_upstream="",
    )
    with tempfile.TemporaryDirectory(prefix="compare-activator-") as tmp:
        figures = figures_of(Bench(tools, Path(tmp)), env, **_options(args))
    print(report(figures))
    args.output.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
