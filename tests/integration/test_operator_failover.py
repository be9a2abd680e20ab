"""Two operator replicas with kopf peering, as the chart runs them (its ServiceAccount, its
peering object): the active one killed with SIGKILL, the standby takes over; how long
servings wait for a reconcile, that the standby reconciled nothing while the other was
active, and that changes made during the switch are not lost."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

import pytest
from kubernetes import client

from modelserving import api
from modelserving_operator.settings import OperatorSettings
from tests.support.operator_process import Operator
from tests.support.servings import serving_manifest
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

SERVINGS = 8
TRIES = 3
LIFETIME = OperatorSettings().peering_lifetime_seconds  # the chart's default too
# A generous bound on a serving's wait: the dead replica's entry expires within LIFETIME, then
# the standby lists everything and reconciles; a busy machine may take much longer than that.
WAIT_BOUND = LIFETIME + 60
PEERING = "modelserving"  # the chart's peering object for a release named modelserving


def reconciled_anything(log: str) -> bool:
    """Whether an operator's log says it reconciled a serving ("caught up: N servings ...")."""
    return re.search(r"caught up: [1-9]\d* servings reconciled", log) is not None


def reconcile_waits(
    generations: Callable[[], dict[str, tuple[int, int]]],
    wanted: dict[str, tuple[int, int]],
    since: float,
) -> dict[str, float]:
    """Seconds from `since` until each serving's status observed its wanted generation."""
    done: dict[str, float] = {}

    def all_reconciled() -> bool:
        now = time.monotonic()
        for name, (_, observed) in generations().items():
            if name in wanted and name not in done and observed >= wanted[name][0]:
                done[name] = now - since
        return len(done) == len(wanted)

    wait_for(all_reconciled, timeout=WAIT_BOUND, what="the servings reconciled", interval=0.2)
    return done


def test_the_standby_takes_over_from_a_killed_active_replica_and_loses_no_change(
    crds, kube_client, namespace, local_env, tmp_path, operator_kubeconfig
):
    apps = client.AppsV1Api(kube_client)

    def peers() -> dict:
        peering = crds.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", PEERING
        )
        return peering.get("status") or {}

    def identity(op: Operator) -> str:
        return f"{op.name}-{op.starts}"

    def generations() -> dict[str, tuple[int, int]]:
        items = crds.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        return {
            s["metadata"]["name"]: (
                s["metadata"]["generation"],
                (s.get("status") or {}).get("observedGeneration", 0),
            )
            for s in items["items"]
        }

    # Given an active replica that has made its servings Ready, and a standby beside it
    active = Operator(local_env, namespace, tmp_path, kubeconfig=operator_kubeconfig, name="a")
    standby = Operator(local_env, namespace, tmp_path, kubeconfig=operator_kubeconfig, name="b")
    active.start()
    names = [f"s{i}" for i in range(SERVINGS)]
    for name in names:
        crds.create_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            serving_manifest(name, logging={"enabled": False}),
        )
    wait_for(
        lambda: all(g == o for g, o in generations().values()) and len(generations()) == SERVINGS,
        timeout=90,
        what="every serving reconciled",
        interval=0.5,
    )
    standby.start()
    waits: list[list[float]] = []
    try:
        for attempt in range(TRIES):
            wait_for(
                lambda op=standby: identity(op) in peers(),
                timeout=60,
                what="the standby in the peering",
            )
            # ... a change made while both run is reconciled, by the active replica alone (kopf
            # freezes both when they share a priority)
            crds.patch_namespaced_custom_object(
                api.GROUP,
                api.VERSION,
                namespace,
                api.PLURAL,
                names[0],
                {"spec": {"server": {"replicas": 5}}},
            )
            reconcile_waits(generations, {names[0]: generations()[names[0]]}, time.monotonic())
            assert not reconciled_anything(standby.log()), "the standby reconciled a serving"

            # When the active replica is killed, and every serving changed at once
            active.kill()
            killed = time.monotonic()
            replicas = attempt + 2
            for name in names:
                crds.patch_namespaced_custom_object(
                    api.GROUP,
                    api.VERSION,
                    namespace,
                    api.PLURAL,
                    name,
                    {"spec": {"server": {"replicas": replicas}}},
                )
            wanted = generations()

            # Then the standby reconciles each change; how long each serving waited
            done = reconcile_waits(generations, wanted, since=killed)
            waits.append(sorted(done.values()))
            print(
                f"\ntry {attempt + 1}: servings waited {min(done.values()):.1f} to "
                f"{max(done.values()):.1f} s after the SIGKILL (peering lifetime {LIFETIME} s)"
            )
            active, standby = standby, active
            # ... no change was lost, and each serving still has one Deployment
            deployments = apps.list_namespaced_deployment(namespace).items
            assert sorted(d.metadata.name for d in deployments) == sorted(names)
            assert {d.spec.replicas for d in deployments} == {replicas}
            wait_for(
                lambda op=active: reconciled_anything(op.log()),
                timeout=30,
                what="the new active replica's caught-up line",
            )
            # ... and the killed replica, started again, is the new standby
            standby.start()
    finally:
        active.stop()
        standby.stop()
    everything = [w for attempt in waits for w in attempt]
    print(
        f"\nover {TRIES} failovers of {SERVINGS} servings: median wait "
        f"{statistics.median(everything):.1f} s, longest {max(everything):.1f} s"
    )
    for op in (active, standby):
        assert op.refusals() == [], "the chart's ServiceAccount lacks a right the operator used"
