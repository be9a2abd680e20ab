"""Part 4: the operator at scale on the local cluster. N ModelServings applied at once (one
apply of a List) in a namespace of their own; the time until all are Ready; then an operator
restart over them and the writes it makes (objects whose resourceVersion moved, Events added);
the operator's resident memory with them all. Then, in the same run, the cluster alone with the
same objects (the children the operator renders, applied without it): the floor the operator's
time is compared with, since on a small machine the control plane's own work dominates.

A KWOK node of the benchmark's own gives the Pods room (the cluster's nodes take 110 each)
and is deleted at the end with the namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import LOAD_CORE, PROXY_CORE, BenchError, PeakRss, Proc, log

SIZES = tuple(int(n) for n in os.environ.get("BENCH_OPERATOR_SIZES", "100,1000").split(","))
READY_TIMEOUT = 120.0  # twice DESIGN's 60 s target for 1,000
SETTLE_SECONDS = 15.0
FLOOR_APPLIERS = 4  # kubectl processes applying the cluster floor's objects side by side
WATCHED_KINDS = "modelservings,deployments,services,configmaps"


class Cluster:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.path = f"{env['path']}:{os.environ['PATH']}"

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["kubectl", "--kubeconfig", self.env["kubeconfig"], *args],
            input=stdin, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PATH": self.path},
        )  # fmt: skip
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
        any(c.get("type") == "Ready" and c.get("status") == "True"
            for c in (i.get("status") or {}).get("conditions", []))
        for i in items["items"]
    )  # fmt: skip


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


def event_count(cluster: Cluster, namespace: str) -> int:
    items = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json"))
    return sum(int(i.get("count") or 1) for i in items["items"])


def start_operator(env: dict[str, Any], namespace: str, workdir: Path) -> Proc:
    cmd = [sys.executable, "-m", "modelserving.cli", "operator", "--standalone",
           "--namespace", namespace, "--operator-namespace", namespace,
           "--log-level", "WARNING"]  # fmt: skip
    # The operator gets the proxy core: the API server and KWOK work on both.
    return Proc(f"operator-{namespace}", cmd, PROXY_CORE, workdir,
                env={"KUBECONFIG": env["kubeconfig"]})  # fmt: skip


def one_size(cluster: Cluster, env: dict[str, Any], n: int, workdir: Path) -> dict[str, Any]:
    namespace = f"bench-op-{n}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    result: dict[str, Any] = {"servings": n, "ready_timeout_seconds": READY_TIMEOUT}
    operator = start_operator(env, namespace, workdir)
    try:
        time.sleep(3)  # kopf's first list of the namespace
        items = {"apiVersion": "v1", "kind": "List",
                 "items": [serving(f"s{i:04d}", namespace) for i in range(n)]}  # fmt: skip
        started = time.monotonic()
        with PeakRss(operator, interval=0.5) as rss:
            subprocess_apply(cluster, items)
            applied = time.monotonic() - started
            ready = count_until(lambda: ready_count(cluster, namespace), n, started)
            result["seconds_to_apply"] = round(applied, 1)
            result["ready"] = ready
            result["deployments_available"] = available_deployments(cluster, namespace)
            result["seconds_to_all_ready"] = (
                round(time.monotonic() - started, 1) if ready >= n else None
            )
        result["operator_rss_peak_mib"] = round(rss.peak_mib, 1)
        result["operator_rss_settled_mib"] = round(operator.rss_mib(), 1)
        # Restart: what does a fresh operator write over servings that are all as they should be?
        operator.stop()
        time.sleep(2)
        before, events_before = versions(cluster, namespace), event_count(cluster, namespace)
        operator = start_operator(env, namespace, workdir)
        time.sleep(SETTLE_SECONDS)
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
    servings (rendered by its own code), applied by FLOOR_APPLIERS kubectl processes at once,
    and the time until every Deployment has its Pod available. What no operator can beat on
    this machine; the operator's time is compared with it."""
    from modelserving.operator import render
    from modelserving.operator.settings import OperatorSettings
    from modelserving.operator.spec import ServingSpec

    namespace = f"bench-floor-{n}-{uuid.uuid4().hex[:5]}"
    children = []
    for i in range(n):
        s = serving(f"s{i:04d}", namespace)
        s["metadata"].update(uid=str(uuid.uuid4()), generation=1)
        for manifest in render.render_children(ServingSpec.from_body(s), OperatorSettings(), i + 1):
            manifest["metadata"].pop("ownerReferences", None)  # no serving owns them here
            children.append(manifest)
    files = []
    for k in range(FLOOR_APPLIERS):
        share = {"apiVersion": "v1", "kind": "List", "items": children[k::FLOOR_APPLIERS]}
        files.append(workdir / f"{namespace}-{k}.json")
        files[-1].write_text(json.dumps(share))
    cluster.kubectl("create", "namespace", namespace)
    try:
        started = time.monotonic()
        env = {**os.environ, "PATH": cluster.path}
        apply = ["kubectl", "--kubeconfig", cluster.env["kubeconfig"], "apply", "--server-side"]
        appliers = [
            subprocess.Popen(
                [*apply, "-f", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for path in files
        ]
        for applier in appliers:
            _, errors = applier.communicate(timeout=300)
            if applier.returncode:
                raise BenchError(f"kubectl apply (cluster floor): {errors.strip()[-500:]}")
        applied = time.monotonic() - started
        available = count_until(lambda: available_deployments(cluster, namespace), n, started)
        return {
            "objects": len(children),
            "seconds_to_apply": round(applied, 1),
            "deployments_available": available,
            "seconds_to_all_available": (
                round(time.monotonic() - started, 1) if available >= n else None
            ),
        }
    finally:
        delete_namespace(cluster, namespace)


def subprocess_apply(cluster: Cluster, items: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(items), timeout=300)


def run(env: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    try:
        import modelserving.operator.handlers  # noqa: F401
    except ImportError as exc:
        return {"notes": [f"not run: the operator cannot be imported ({exc})"]}
    if not env or not Path(env.get("kubeconfig", "")).exists():
        return {"notes": ["not run: no local cluster (.localenv/env.json)"]}
    cluster = Cluster(env)
    crd = Path(__file__).resolve().parent.parent / "crds" / "modelserving.io_modelservings.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    node = f"bench-node-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(fake_node(node, max(SIZES) + 100)))
    out: dict[str, Any] = {
        "notes": [
            f"operator on core {PROXY_CORE}; the API server, etcd and KWOK unpinned; "
            f"a KWOK node of {max(SIZES) + 100} pods added for the run (core {LOAD_CORE} "
            "hosts the rest); servings with logging disabled (no topics); restart writes "
            "counted as objects whose resourceVersion moved "
            f"plus Events added, {SETTLE_SECONDS:.0f} s after the new operator started"
        ]
    }
    try:
        for n in SIZES:
            log(f"operator: {n} ModelServings applied at once")
            try:
                out[str(n)] = one_size(cluster, env, n, workdir)
            except (BenchError, subprocess.SubprocessError) as exc:
                out[str(n)] = {"error": str(exc)[-1000:]}
            log(f"operator: the cluster alone with the same objects for {n} servings")
            try:
                out[f"floor_{n}"] = cluster_floor(cluster, n, workdir)
            except (BenchError, subprocess.SubprocessError) as exc:
                out[f"floor_{n}"] = {"error": str(exc)[-1000:]}
    finally:
        try:
            cluster.kubectl("delete", "node", node, "--wait=false")
        except BenchError as exc:
            log(str(exc))
    return out
