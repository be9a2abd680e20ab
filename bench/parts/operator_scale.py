"""Part 4: the operator at scale on the local cluster. N ModelServings created at once in a
namespace of their own; the time until all are Ready, with the operator's own metrics scraped
meanwhile (its API writes by resource and verb, reconciles, work-queue depth and wait); then an
operator restart over them: how long until it has reconciled each once, and the writes it makes
(objects whose resourceVersion moved, Events added); the operator's resident memory with them
all, and at its restart. Then, in the same run, the cluster alone
with the same objects (the children the operator renders, created without it): the floor the
operator's time is compared with, since on a small machine the control plane's own work
dominates. Each side also gives the control plane's CPU seconds meanwhile (kube-apiserver,
etcd, controllers, KWOK): what the run cost the cluster, a figure the machine's noise moves
far less than the wall time.

Both sides are created by the same applier, as fast as the API server takes them: one POST per
object, FLOOR_CONCURRENCY at once (kubectl sends one request at a time per process, and its
server-side apply of a List was the floor's bottleneck, which flattered the ratio).

    python -m bench.parts.operator_scale          # BENCH_OPERATOR_SIZES=100,1000 by default

prints the part's figures as JSON (`make bench` runs it among the other parts). The cluster
slows from run to run within one environment, so each side says where it ran in the order
(`run_order`, counted over every size) and the load average as it began (`load_average`, 1,
5 and 15 minutes); BENCH_OPERATOR_ORDER changes the order of the sides (by default
`operator,floor,floor_writes`; any of them may be left out). With
BENCH_OPERATOR_PY_SPY=PREFIX the operator's stacks while the servings come up are recorded
with py-spy to PREFIX-N.txt (collapsed).

A KWOK node of the benchmark's own gives the Pods room (the cluster's nodes take 110 each)
and is deleted at the end with the namespaces."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness.procs import (
    LOAD_CORE,
    PROXY_CORE,
    BenchError,
    ControlPlaneCpu,
    PeakRss,
    Proc,
    free_port,
    log,
)

SIZES = tuple(int(n) for n in os.environ.get("BENCH_OPERATOR_SIZES", "100,1000").split(","))
# The sides of each size, in the order they run: the operator, the cluster alone with the same
# objects, the cluster with the writes any operator makes. Their keys in the results: N,
# floor_N, floor_writes_N.
SIDES = {"operator": "", "floor": "floor_", "floor_writes": "floor_writes_"}
ORDER = tuple(os.environ.get("BENCH_OPERATOR_ORDER", ",".join(SIDES)).split(","))
# Long enough for the cluster alone to finish at 1,000 on a busy machine: a floor cut short
# gives no ratio at all.
READY_TIMEOUT = 300.0
SETTLE_SECONDS = 15.0
# Requests the applier keeps in flight (both sides): as many as the operator's own default
# (--api-concurrency), so the floor never has less room at the API server than the operator.
FLOOR_CONCURRENCY = 32
WATCHED_KINDS = (
    "modelservings,deployments,services,configmaps,serviceaccounts,rolebindings,networkpolicies"
)
SCRAPE_SECONDS = 5.0  # as often as a keen Prometheus; each scrape costs the operator CPU


class Cluster:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.path = f"{env['path']}:{os.environ['PATH']}"

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", self.env["kubeconfig"], *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PATH": self.path},
        )
        if proc.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args[:3])}: {proc.stderr.strip()[-500:]}")
        return proc.stdout


def serving(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelserving.io/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": name, "version": 1, "basePath": "s3://models/bench"},
            "server": {"replicas": 1},
            "auth": {"mode": "none"},
            # No topic per serving: 1,000 topics would weigh on the shared broker (its restart
            # replays every one); the figure is the operator's and the cluster's, not Kafka's.
            "logging": {"enabled": False},
        },
    }


def fake_node(name: str, pods: int) -> dict[str, Any]:
    resources = {"cpu": "4000", "memory": "8Ti", "pods": str(pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name},
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def ready_count(cluster: Cluster, namespace: str) -> int:
    items = json.loads(cluster.kubectl("get", "modelservings", "-n", namespace, "-o", "json"))
    return sum(
        any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (i.get("status") or {}).get("conditions", [])
        )
        for i in items["items"]
    )


def available_deployments(cluster: Cluster, namespace: str) -> int:
    """Deployments with a Pod available: how far the cluster (KWOK) got, apart from status."""
    items = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json"))
    return sum(bool((i.get("status") or {}).get("availableReplicas")) for i in items["items"])


def versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    items = json.loads(cluster.kubectl("get", WATCHED_KINDS, "-n", namespace, "-o", "json"))
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in items["items"]
    }


def event_count(cluster: Cluster, namespace: str, kind: str | None = None) -> int:
    """The Events of the namespace (each counted as often as it happened), or those of the
    objects of one kind (the ModelServings': the operator's; the cluster's controllers and
    scheduler post theirs on Deployments, ReplicaSets and Pods)."""
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json"))
    return sum(
        int(i.get("count") or 1)
        for i in items["items"]
        if kind is None or i.get("involvedObject", {}).get("kind") == kind
    )


def start_operator(env: dict[str, Any], namespace: str, workdir: Path, metrics_port: int) -> Proc:
    cmd = [
        sys.executable,
        "-m",
        "modelserving.cli",
        "operator",
        "--standalone",
        "--namespace",
        namespace,
        "--operator-namespace",
        namespace,
        "--log-level",
        "WARNING",
        "--metrics-port",
        str(metrics_port),
    ]
    # The operator gets the proxy core: the API server and KWOK work on both.
    return Proc(
        f"operator-{namespace}", cmd, PROXY_CORE, workdir, env={"KUBECONFIG": env["kubeconfig"]}
    )


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> {sample name: [(labels, value)]} (no escapes in our
    label values: resource names, verbs, codes, reasons)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for pair in rest.rstrip("}").split(","):
            if "=" in pair:
                key, _, val = pair.partition("=")
                labels[key] = val.strip('"')
        out.setdefault(name, []).append((labels, float(value)))
    return out


class MetricsScraper:
    """Scrapes the operator's /metrics every SCRAPE_SECONDS in a thread: the work queue's
    largest depth and oldest wait seen, and the last scrape (writes, reconciles, waits)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.last: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.peak_depth = 0.0
        self.peak_oldest_wait = 0.0
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def scrape(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as answer:
                self.last = parse_metrics(answer.read().decode())
        except OSError:
            return  # not listening yet, or slow: the next scrape counts
        self.scrapes += 1
        self.peak_depth = max(self.peak_depth, self.value("modelserving_operator_queue_depth"))
        self.peak_oldest_wait = max(
            self.peak_oldest_wait, self.value("modelserving_operator_queue_oldest_wait_seconds")
        )

    def value(self, name: str, **match: str) -> float:
        return sum(
            v
            for labels, v in self.last.get(name, [])
            if all(labels.get(k) == want for k, want in match.items())
        )

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_SECONDS):
            self.scrape()

    def __enter__(self) -> MetricsScraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.scrape()

    def summary(self, n: int) -> dict[str, Any]:
        """What the operator says of its own work for n servings."""
        writes: dict[str, float] = {}
        for labels, v in self.last.get("modelserving_operator_api_writes_total", []):
            key = f"{labels.get('resource')} {labels.get('verb')} {labels.get('code')}"
            writes[key] = writes.get(key, 0) + v
        waits = self.value("modelserving_operator_queue_wait_seconds_count")
        reconciles = self.value("modelserving_operator_reconciles_total")
        took = self.value("modelserving_operator_reconcile_duration_seconds_sum")
        return {
            "api_writes": {k: int(v) for k, v in sorted(writes.items())},
            "api_writes_per_serving": round(sum(writes.values()) / n, 2),
            "reconciles_per_serving": round(reconciles / n, 2),
            "reconcile_seconds_mean": round(took / reconciles, 4) if reconciles else None,
            "queue_wait_seconds_mean": (
                round(self.value("modelserving_operator_queue_wait_seconds_sum") / waits, 3)
                if waits
                else None
            ),
            "queue_depth_peak": int(self.peak_depth),
            "queue_oldest_wait_peak_seconds": round(self.peak_oldest_wait, 1),
            "scrapes": self.scrapes,
        }


def py_spy(operator: Proc, n: int) -> subprocess.Popen[bytes] | None:
    """py-spy recording the operator (BENCH_OPERATOR_PY_SPY=PREFIX), or None."""
    prefix = os.environ.get("BENCH_OPERATOR_PY_SPY")
    if not prefix:
        return None
    from bench.harness import tools

    binary, _ = tools.ensure_python_extras()
    if binary is None:
        log("py-spy is not there: no profile of the operator")
        return None
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(operator.pid),
            "--format",
            "raw",
            "--rate",
            "50",
            "--output",
            f"{prefix}-{n}.txt",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def one_size(cluster: Cluster, env: dict[str, Any], n: int, workdir: Path) -> dict[str, Any]:
    namespace = f"bench-op-{n}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    result: dict[str, Any] = {"servings": n, "ready_timeout_seconds": READY_TIMEOUT}
    metrics_port = free_port()
    operator = start_operator(env, namespace, workdir, metrics_port)
    try:
        time.sleep(3)  # kopf's first list of the namespace
        servings = [serving(f"s{i:04d}", namespace) for i in range(n)]
        spy = py_spy(operator, n)
        started = time.monotonic()
        with (
            PeakRss(operator, interval=0.5) as rss,
            MetricsScraper(metrics_port) as metrics,
            ControlPlaneCpu(cluster.env["cluster_dir"]) as control_plane,
        ):
            create_all(cluster, servings)
            applied = time.monotonic() - started
            ready = count_until(lambda: ready_count(cluster, namespace), n, started)
            result["seconds_to_apply"] = round(applied, 1)
            result["ready"] = ready
            result["deployments_available"] = available_deployments(cluster, namespace)
            result["seconds_to_all_ready"] = (
                round(time.monotonic() - started, 1) if ready >= n else None
            )
            # CPU the operator used meanwhile: near the wall time, it waited on itself; far
            # below, on the API server.
            result["operator_cpu_seconds"] = round(operator.cpu_seconds(), 1)
        result["control_plane_cpu_seconds"] = control_plane.seconds
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(30)
        result["operator"] = metrics.summary(n)
        result["events_per_serving"] = round(event_count(cluster, namespace, "ModelServing") / n, 2)
        result["cluster_events_per_serving"] = round(event_count(cluster, namespace) / n, 2)
        result["operator_rss_peak_mib"] = round(rss.peak_mib, 1)
        time.sleep(5)  # the queue drained, the start's memory given back
        result["operator_rss_settled_mib"] = round(operator.rss_mib(), 1)
        # Restart: what does a fresh operator write over servings that are all as they should be?
        operator.stop()
        time.sleep(2)
        before, events_before = versions(cluster, namespace), event_count(cluster, namespace)
        operator = start_operator(env, namespace, workdir, metrics_port)
        restarted = time.monotonic()
        with PeakRss(operator, interval=0.5) as rss:
            # Until it has reconciled every serving once (its first listing, then the work)
            again = MetricsScraper(metrics_port)
            reconciled = count_until(lambda: reconciles(again), n, restarted)
            result["restart_seconds_to_reconcile_all"] = (
                round(time.monotonic() - restarted, 1) if reconciled >= n else None
            )
            time.sleep(max(3.0, SETTLE_SECONDS - (time.monotonic() - restarted)))
        result["operator_rss_restart_peak_mib"] = round(rss.peak_mib, 1)
        after, events_after = versions(cluster, namespace), event_count(cluster, namespace)
        moved = sorted(k for k, v in after.items() if before.get(k) != v)
        result["restart_objects_written"] = len(moved)
        result["restart_written_examples"] = moved[:5]
        result["restart_events_added"] = events_after - events_before
        result["operator_rss_after_restart_mib"] = round(operator.rss_mib(), 1)
    finally:
        operator.stop()
        try:
            delete_namespace(cluster, namespace)
        except BenchError as exc:
            log(str(exc))
    return result


def reconciles(metrics: MetricsScraper) -> int:
    """Reconciles the operator has counted so far (0 while it does not answer yet)."""
    metrics.scrape()
    return int(metrics.value("modelserving_operator_reconciles_total"))


def count_until(count: Callable[[], int], n: int, started: float) -> int:
    """Poll `count` every second until it reaches n or READY_TIMEOUT has passed since `started`;
    returns the last count."""
    value = 0
    while time.monotonic() - started < READY_TIMEOUT:
        value = count()
        if value >= n:
            break
        time.sleep(1)
    return value


def delete_namespace(cluster: Cluster, namespace: str) -> None:
    """Delete and wait until it is gone: the garbage collection of thousands of objects would
    otherwise weigh on the next measurement."""
    cluster.kubectl("delete", "namespace", namespace, "--timeout=600s", timeout=660)


def cluster_floor(cluster: Cluster, n: int, workdir: Path) -> dict[str, Any]:
    """The cluster alone with the same objects: the children the operator would make for n
    servings (rendered by its own code), created by the same applier as the servings, and the
    time until every Deployment has its Pod available. What no operator can beat on this
    machine; the operator's time is compared with it."""
    from modelserving_operator.render import manifests as render
    from modelserving_operator.settings import OperatorSettings
    from modelserving_operator.spec import ServingSpec

    namespace = f"bench-floor-{n}-{uuid.uuid4().hex[:5]}"
    children = []
    for i in range(n):
        s = serving(f"s{i:04d}", namespace)
        s["metadata"].update(uid=str(uuid.uuid4()), generation=1)
        for manifest in render.render_children(ServingSpec.from_body(s), OperatorSettings(), i + 1):
            manifest["metadata"].pop("ownerReferences", None)  # no serving owns them here
            children.append(manifest)
    return {
        "objects": len(children),
        "applier": f"one POST per object, {FLOOR_CONCURRENCY} at once",
        **timed_floor(cluster, namespace, n, lambda: create_all(cluster, children)),
    }


def timed_floor(
    cluster: Cluster, namespace: str, n: int, apply: Callable[[], object]
) -> dict[str, Any]:
    """A floor's run in `namespace` (created here, deleted at the end): `apply`, then the time
    until every one of the n Deployments has its Pod available, and the control plane's CPU
    meanwhile."""
    cluster.kubectl("create", "namespace", namespace)
    try:
        started = time.monotonic()
        with ControlPlaneCpu(cluster.env["cluster_dir"]) as control_plane:
            apply()
            applied = time.monotonic() - started
            available = count_until(lambda: available_deployments(cluster, namespace), n, started)
        return {
            "seconds_to_apply": round(applied, 1),
            "deployments_available": available,
            "seconds_to_all_available": (
                round(time.monotonic() - started, 1) if available >= n else None
            ),
            "control_plane_cpu_seconds": control_plane.seconds,
        }
    finally:
        delete_namespace(cluster, namespace)


def cluster_floor_with_servings(cluster: Cluster, n: int, workdir: Path) -> dict[str, Any]:
    """The writes any operator must make, with no operator: each serving created (the user's
    POST, as on the operator's side), its children as the operator renders them, owned by it
    (the garbage collector's work included), and one status write; timed until every
    Deployment has its Pod available. The status is written right after the children, not once
    the Pod is ready: the same write, earlier. The operator's time over this is what it costs
    beyond what a perfect operator writes."""
    from modelserving import api
    from modelserving.kube_access import from_environment
    from modelserving_operator.kube import KubeClient, KubeError, object_path
    from modelserving_operator.render import manifests as render
    from modelserving_operator.settings import OperatorSettings
    from modelserving_operator.spec import ServingSpec

    namespace = f"bench-floor-writes-{n}-{uuid.uuid4().hex[:5]}"
    settings = OperatorSettings()

    writes = 0

    async def create() -> None:
        nonlocal writes
        kube = KubeClient(from_environment(cluster.env["kubeconfig"]), FLOOR_CONCURRENCY, 120)
        pending = list(range(n))[::-1]

        async def post(manifest: Mapping[str, Any]) -> dict[str, Any]:
            path = object_path(manifest["kind"], None, namespace)
            return await kube.request("POST", path, body=manifest)

        async def one_by_one() -> None:
            while pending:
                i = pending.pop()
                try:
                    created = await post(serving(f"s{i:04d}", namespace))
                    spec = ServingSpec.from_body(created)
                    await asyncio.gather(
                        *(post(child) for child in render.render_children(spec, settings, i + 1))
                    )
                    status = {
                        "status": {
                            "modelId": i + 1,
                            "observedGeneration": 1,
                            "conditions": [
                                {
                                    "type": "Ready",
                                    "status": "True",
                                    "reason": "Available",
                                    "message": "the Deployment has 1 of 1 pods available",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                                },
                            ],
                        }
                    }
                    await kube.merge_patch(api.KIND, spec.name, namespace, status, status=True)
                except KubeError as exc:
                    raise BenchError(f"serving s{i:04d} and its children: {exc}") from exc

        try:
            await asyncio.gather(*(one_by_one() for _ in range(FLOOR_CONCURRENCY)))
        finally:
            await kube.close()
            writes = sum(kube.writes.counts.values())  # the client counts every write it sent

    timed = timed_floor(cluster, namespace, n, lambda: asyncio.run(create()))
    return {
        "writes": writes,
        "applier": f"one request per write, {FLOOR_CONCURRENCY} servings at once",
        **timed,
    }


def create_all(cluster: Cluster, objects: Iterable[Mapping[str, Any]]) -> None:
    """Create every object (each a POST, as `kubectl create` sends), FLOOR_CONCURRENCY at once:
    as fast as the API server takes them. Both sides of the comparison go through here."""
    from modelserving.kube_access import from_environment
    from modelserving_operator.kube import KubeClient, KubeError, object_path

    async def create() -> None:
        kube = KubeClient(from_environment(cluster.env["kubeconfig"]), FLOOR_CONCURRENCY, 120)
        pending = list(objects)[::-1]

        async def one_by_one() -> None:
            while pending:
                manifest = pending.pop()
                meta = manifest["metadata"]
                path = object_path(manifest["kind"], None, meta["namespace"])
                try:
                    await kube.request("POST", path, body=manifest)
                except KubeError as exc:
                    raise BenchError(f"creating {manifest['kind']} {meta['name']}: {exc}") from exc

        try:
            await asyncio.gather(*(one_by_one() for _ in range(FLOOR_CONCURRENCY)))
        finally:
            await kube.close()

    asyncio.run(create())


def run(env: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    try:
        import modelserving_operator.handlers  # noqa: F401
    except ImportError as exc:
        return {"notes": [f"not run: the operator cannot be imported ({exc})"]}
    if not env or not Path(env.get("kubeconfig", "")).exists():
        return {"notes": ["not run: no local cluster (.localenv/env.json)"]}
    cluster = Cluster(env)
    crd = REPO / "crds" / "modelserving.io_modelservings.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    node = f"bench-node-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(fake_node(node, max(SIZES) + 100)))
    out: dict[str, Any] = {
        "notes": [
            f"operator on core {PROXY_CORE}; the API server, etcd and KWOK unpinned; "
            f"a KWOK node of {max(SIZES) + 100} pods added for the run (core {LOAD_CORE} "
            "hosts the rest); servings with logging disabled (no topics); restart writes "
            "counted as objects whose resourceVersion moved plus Events added, once the new "
            f"operator has reconciled every serving and at least {SETTLE_SECONDS:.0f} s after "
            "it started"
        ]
    }
    unknown = [side for side in ORDER if side not in SIDES]
    if unknown:
        return {
            "notes": [f"not run: BENCH_OPERATOR_ORDER names {unknown}, not one of {list(SIDES)}"]
        }
    out["notes"].append(f"sides in this order, each size: {', '.join(ORDER)}")
    sides: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
        "operator": (
            "{n} ModelServings applied at once",
            lambda n: one_size(cluster, env, n, workdir),
        ),
        "floor": (
            "the cluster alone with the same objects for {n} servings",
            lambda n: cluster_floor(cluster, n, workdir),
        ),
        "floor_writes": (
            "the cluster with the writes any operator makes for {n} servings",
            lambda n: cluster_floor_with_servings(cluster, n, workdir),
        ),
    }
    position = 0
    try:
        for n in SIZES:
            for side in ORDER:
                what, measure = sides[side]
                position += 1
                log(f"operator: {what.format(n=n)}")
                load = [round(x, 2) for x in os.getloadavg()]
                try:
                    result = measure(n)
                except (BenchError, subprocess.SubprocessError) as exc:
                    result = {"error": str(exc)[-1000:]}
                out[f"{SIDES[side]}{n}"] = {**result, "run_order": position, "load_average": load}
    finally:
        try:
            cluster.kubectl("delete", "node", node, "--wait=false")
        except BenchError as exc:
            log(str(exc))
    return out


def main() -> int:
    from bench.harness.environment import localenv_settings

    with tempfile.TemporaryDirectory(prefix="modelserving-bench-operator-") as workdir:
        print(json.dumps(run(localenv_settings(), Path(workdir)), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
