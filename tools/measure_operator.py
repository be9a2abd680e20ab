"""The operator at scale on the local cluster, as a user of it would see it: N ModelServings
applied at once in a scratch namespace, the time until the Deployments are available and the
servings Ready, the operator's peak memory, then a restart over them and what it writes
(objects whose resourceVersion moved, Events added).

    .venv/bin/python tools/measure_operator.py 100 1000 [--logging] [--settle 15]

The operator runs as a subprocess watching only the scratch namespace; a KWOK node of the
script's own gives the Pods room. The namespace, the node and (with --logging) the topics are
deleted at the end."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.operator_scale import Cluster, fake_node  # noqa: E402
from bench.operator_scale import serving as bench_serving  # noqa: E402

ENV = json.loads((REPO / ".localenv" / "env.json").read_text())
KINDS = (
    "modelservings,deployments,services,configmaps,serviceaccounts,rolebindings,"
    "networkpolicies,replicasets,pods"
)


# kubectl with the local environment's kubeconfig and binaries; some calls take minutes.
kubectl = functools.partial(Cluster(ENV).kubectl, timeout=300)


def items(kinds: str, namespace: str) -> list[dict]:
    return json.loads(kubectl("get", kinds, "-n", namespace, "-o", "json"))["items"]


def serving(name: str, namespace: str) -> dict:
    """The benchmark's serving, its inference log left to the operator's flags (--logging)."""
    manifest = bench_serving(name, namespace)
    del manifest["spec"]["logging"]
    return manifest


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Operator:
    def __init__(self, namespace: str, logging_on: bool, logdir: Path, extra: list[str]) -> None:
        self.namespace, self.logging_on, self.logdir, self.extra = (
            namespace, logging_on, logdir, extra)  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        cmd = [sys.executable, "-m", "modelserving.cli", "operator", "--standalone",
               "--namespace", self.namespace, "--operator-namespace", self.namespace,
               "--log-level", "WARNING", *self.extra]  # fmt: skip
        if self.logging_on:
            cmd += ["--kafka-bootstrap-servers", ENV["kafka_bootstrap"]]
        out = (self.logdir / f"operator-{self.starts}.log").open("w")
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "KUBECONFIG": ENV["kubeconfig"]},
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ready(item: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or []
    )


def versions(namespace: str) -> dict[str, str]:
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in items(KINDS, namespace)
    }


def events(namespace: str) -> Counter:
    return Counter(
        (e["involvedObject"]["kind"], e["reason"], e["metadata"]["name"])
        for e in items("events", namespace)
        for _ in range(int(e.get("count") or 1))
    )


def delete_topics(names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def drop() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=ENV["kafka_bootstrap"])
        await admin.start()
        try:
            present = set(await admin.list_topics())
            doomed = [n for n in names if n in present]
            for start in range(0, len(doomed), 200):
                await admin.delete_topics(doomed[start : start + 200])
        finally:
            await admin.close()

    asyncio.run(drop())


def one_size(n: int, args: argparse.Namespace, logdir: Path) -> dict:
    namespace = f"measure-op-{n}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", namespace)
    op = Operator(namespace, args.logging, logdir, args.operator_arg)
    result: dict = {"servings": n, "logging": args.logging}
    try:
        op.start()
        time.sleep(3)
        listing = {"apiVersion": "v1", "kind": "List",
                   "items": [serving(f"s{i:04d}", namespace) for i in range(n)]}  # fmt: skip
        spy = None
        if args.py_spy:  # collapsed stacks of the operator while the servings come up
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(op.proc.pid), "--format", "raw", "--output", args.py_spy, "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        started = time.monotonic()
        kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(listing))
        result["seconds_to_apply"] = round(time.monotonic() - started, 1)
        first_all = {}
        while time.monotonic() - started < args.deadline:
            now = round(time.monotonic() - started, 1)
            servings = items("modelservings", namespace)
            deployments = items("deployments", namespace)
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
            print(f"  {now:6.1f}s {counts} rss {rss_mib(op.proc.pid):.0f} MiB", flush=True)
            if counts["ready"] >= n:
                break
            time.sleep(2)
        result["all_after_seconds"] = first_all
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        result["rss_peak_mib"] = round(rss_mib(op.proc.pid, "VmHWM"), 1)
        time.sleep(5)
        result["rss_settled_mib"] = round(rss_mib(op.proc.pid), 1)
        op.stop()
        time.sleep(2)
        before, events_before = versions(namespace), events(namespace)
        op.start()
        time.sleep(args.settle)
        after, events_after = versions(namespace), events(namespace)
        moved = sorted(k for k, v in after.items() if before.get(k) != v)
        result["restart_objects_written"] = len(moved)
        result["restart_written_by_kind"] = dict(Counter(k.split("/")[0] for k in moved))
        result["restart_written_examples"] = moved[:5]
        added = events_after - events_before
        result["restart_events_added"] = sum(added.values())
        result["restart_events_by_reason"] = dict(Counter(r for (_, r, _) in added.elements()))
        result["rss_after_restart_mib"] = round(rss_mib(op.proc.pid), 1)
    finally:
        op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false")
        if args.logging:
            delete_topics([f"{namespace}.s{i:04d}.inference" for i in range(n)])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--logging", action="store_true", help="servings log to the broker")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after the restart")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for Ready")
    parser.add_argument("--py-spy", help="record the operator's stacks to this file")
    parser.add_argument("--operator-arg", action="append", default=[], help="passed on")
    args = parser.parse_args()
    crd = REPO / "crds" / "modelserving.io_modelservings.yaml"
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    node = f"measure-node-{uuid.uuid4().hex[:5]}"
    kubectl("apply", "-f", "-", stdin=json.dumps(fake_node(node, max(args.sizes) + 100)))
    logdir = Path(tempfile.mkdtemp(prefix="measure-operator-"))
    print(f"operator logs in {logdir}", flush=True)
    try:
        for n in args.sizes:
            print(f"{n} servings", flush=True)
            print(json.dumps(one_size(n, args, logdir), indent=1), flush=True)
    finally:
        kubectl("delete", "node", node, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
