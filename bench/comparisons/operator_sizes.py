"""The operator at the sizes you name, in detail, as a user of it would see it: N ModelServings
applied at once in a scratch namespace, the time until the Deployments are available and the
servings Ready (with the progress every 2 s), the operator's peak memory, then a restart over
them: how long until it has reconciled each (its own metrics say), and what it writes (objects
whose resourceVersion moved, by kind; Events added, by reason).

    python -m bench.comparisons.operator_sizes 100 1000 [--logging] [--settle 15]
        [--operator-arg FLAG]

The operator runs as a subprocess (not pinned) watching only the scratch namespace; a KWOK node
of its own gives the Pods room. The namespace, the node and (with --logging) the topics are
deleted at the end. Needs the local environment (.localenv/env.json)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench import REPO
from bench.harness.environment import localenv_settings
from bench.harness.procs import Proc, free_port
from bench.harness.stats import parse_status_kib
from bench.harness.topics import delete_topics
from bench.parts.operator_scale import Cluster, MetricsScraper, fake_node, reconciles
from bench.parts.operator_scale import serving as bench_serving

KINDS = (
    "modelservings,deployments,services,configmaps,serviceaccounts,rolebindings,"
    "networkpolicies,replicasets,pods"
)
KUBECTL_TIMEOUT = 300  # some calls over a thousand servings take minutes


def items(cluster: Cluster, kinds: str, namespace: str) -> list[dict]:
    out = cluster.kubectl("get", kinds, "-n", namespace, "-o", "json", timeout=KUBECTL_TIMEOUT)
    return json.loads(out)["items"]


def serving(name: str, namespace: str) -> dict:
    """The benchmark's serving, its inference log left to the operator's flags (--logging)."""
    manifest = bench_serving(name, namespace)
    del manifest["spec"]["logging"]
    return manifest


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), field) / 1024


def start_operator(
    env: dict[str, Any],
    namespace: str,
    args: argparse.Namespace,
    logdir: Path,
    nth: int,
    metrics_port: int,
) -> Proc:
    """The operator watching `namespace` alone; its output in logdir/operator-NTH.log."""
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
        *args.operator_arg,
    ]
    if args.logging:
        cmd += ["--kafka-bootstrap-servers", env["kafka_bootstrap"]]
    return Proc(
        f"operator-{nth}", cmd, None, logdir, env={"KUBECONFIG": env["kubeconfig"]}, cwd=REPO
    )


def ready(item: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or []
    )


def versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in items(cluster, KINDS, namespace)
    }


def events(cluster: Cluster, namespace: str) -> Counter:
    return Counter(
        (e["involvedObject"]["kind"], e["reason"], e["metadata"]["name"])
        for e in items(cluster, "events", namespace)
        for _ in range(int(e.get("count") or 1))
    )


def one_size(
    cluster: Cluster, env: dict[str, Any], n: int, args: argparse.Namespace, logdir: Path
) -> dict:
    namespace = f"measure-op-{n}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace, timeout=KUBECTL_TIMEOUT)
    starts, metrics_port = 1, free_port()
    op = start_operator(env, namespace, args, logdir, starts, metrics_port)
    result: dict = {"servings": n, "logging": args.logging}
    try:
        time.sleep(3)
        listing = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [serving(f"s{i:04d}", namespace) for i in range(n)],
        }
        spy = None
        if args.py_spy:  # collapsed stacks of the operator while the servings come up
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(op.pid),
                    "--format",
                    "raw",
                    "--output",
                    args.py_spy,
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        started = time.monotonic()
        cluster.kubectl(
            "apply", "--server-side", "-f", "-", stdin=json.dumps(listing), timeout=KUBECTL_TIMEOUT
        )
        result["seconds_to_apply"] = round(time.monotonic() - started, 1)
        first_all = {}
        while time.monotonic() - started < args.deadline:
            now = round(time.monotonic() - started, 1)
            servings = items(cluster, "modelservings", namespace)
            deployments = items(cluster, "deployments", namespace)
            counts = {
                "deployments": len(deployments),
                "available": sum(
                    bool((d.get("status") or {}).get("availableReplicas")) for d in deployments
                ),
                "ready": sum(ready(s) for s in servings),
            }
            for what, count in counts.items():
                if count >= n and what not in first_all:
                    first_all[what] = now
            print(f"  {now:6.1f}s {counts} rss {memory_mib(op.pid):.0f} MiB", flush=True)
            if counts["ready"] >= n:
                break
            time.sleep(2)
        result["all_after_seconds"] = first_all
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        result["rss_peak_mib"] = round(memory_mib(op.pid, "VmHWM"), 1)
        time.sleep(5)
        result["rss_settled_mib"] = round(memory_mib(op.pid), 1)
        op.stop(timeout=30)
        time.sleep(2)
        before, events_before = versions(cluster, namespace), events(cluster, namespace)
        starts += 1
        op = start_operator(env, namespace, args, logdir, starts, metrics_port)
        restarted, metrics = time.monotonic(), MetricsScraper(metrics_port)
        while reconciles(metrics) < n and time.monotonic() - restarted < args.deadline:
            time.sleep(1)
        result["restart_seconds_to_reconcile_all"] = (
            round(time.monotonic() - restarted, 1) if reconciles(metrics) >= n else None
        )
        time.sleep(max(0.0, args.settle - (time.monotonic() - restarted)))
        after, events_after = versions(cluster, namespace), events(cluster, namespace)
        moved = sorted(k for k, v in after.items() if before.get(k) != v)
        result["restart_objects_written"] = len(moved)
        result["restart_written_by_kind"] = dict(Counter(k.split("/")[0] for k in moved))
        result["restart_written_examples"] = moved[:5]
        added = events_after - events_before
        result["restart_events_added"] = sum(added.values())
        result["restart_events_by_reason"] = dict(Counter(r for (_, r, _) in added.elements()))
        result["rss_after_restart_mib"] = round(memory_mib(op.pid), 1)
    finally:
        op.stop(timeout=30)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", timeout=KUBECTL_TIMEOUT)
        if args.logging:
            delete_topics(
                env["kafka_bootstrap"], [f"{namespace}.s{i:04d}.inference" for i in range(n)]
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.comparisons.operator_sizes", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sizes", nargs="+", type=int, help="numbers of servings, one run each")
    parser.add_argument("--logging", action="store_true", help="servings log to the broker")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds after the restart, at least"
    )
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for Ready")
    parser.add_argument("--py-spy", help="record the operator's stacks to this file")
    parser.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="passed on to `modelserving operator` (repeatable)",
    )
    args = parser.parse_args(argv)
    env = localenv_settings()
    if env is None:
        raise SystemExit("the local environment is needed: make env-up")
    cluster = Cluster(env)
    crd = REPO / "crds" / "modelserving.io_modelservings.yaml"
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(crd), timeout=KUBECTL_TIMEOUT
    )
    node = f"measure-node-{uuid.uuid4().hex[:5]}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(fake_node(node, max(args.sizes) + 100)),
        timeout=KUBECTL_TIMEOUT,
    )
    logdir = Path(tempfile.mkdtemp(prefix="measure-operator-"))
    print(f"operator logs in {logdir}", flush=True)
    try:
        for n in args.sizes:
            print(f"{n} servings", flush=True)
            print(json.dumps(one_size(cluster, env, n, args, logdir), indent=1), flush=True)
    finally:
        cluster.kubectl("delete", "node", node, "--wait=false", timeout=KUBECTL_TIMEOUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
