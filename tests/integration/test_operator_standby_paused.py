"""A replica that was active and is paused again by kopf's peering (the active one it took over
from was only stopped, SIGSTOP, and came back) does nothing from its frozen caches: its retries
and timers reconcile nothing while the other works, and once resumed it lists anew before it
reconciles again."""

from __future__ import annotations

import os
import signal

import pytest
from kubernetes import client

from modelserving import api
from modelserving_operator.settings import OperatorSettings
from tests.support.operator_process import Operator
from tests.support.ports import free_port
from tests.support.prometheus import scrape, value
from tests.support.servings import condition, get_serving, serving_manifest
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

LIFETIME = OperatorSettings().peering_lifetime_seconds
PEERING = "modelserving"  # the chart's peering object for a release named modelserving
RECONCILES = "modelserving_operator_reconciles_total"


PAUSED = "Pausing operations in favour of"  # kopf's peering, in the replica's log
RESUMED = "Resuming operations after the pause"


def test_a_paused_replica_reconciles_nothing_while_the_other_works(
    crds, kube_client, namespace, local_env, tmp_path, operator_kubeconfig
):
    ports = {name: free_port() for name in ("a", "b")}
    a, b = (
        Operator(
            local_env,
            namespace,
            tmp_path,
            ["--metrics-port", str(ports[name])],
            kubeconfig=operator_kubeconfig,
            name=name,
        )
        for name in ("a", "b")
    )

    def reconciles(op: Operator) -> float:
        return value(scrape(f"http://127.0.0.1:{ports[op.name]}/metrics"), RECONCILES)

    def peers() -> dict:
        peering = crds.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", PEERING
        )
        return peering.get("status") or {}

    # Given a serving that cannot be made (a ServiceAccount of its sidecar's name is someone
    # else's), which the active replica retries every 2 s, and a standby beside it
    client.CoreV1Api(kube_client).create_namespaced_service_account(
        namespace, {"metadata": {"name": "victim-sidecar", "namespace": namespace}}
    )
    a.start()
    crds.create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        serving_manifest("victim", logging={"enabled": False}),
    )
    wait_for(
        lambda: (
            condition(get_serving(crds, namespace, "victim"), "Ready").get("reason") == "Conflict"
        ),
        timeout=60,
        what="the serving's Conflict",
    )
    b.start()
    try:
        wait_for(lambda: f"b-{b.starts}" in peers(), timeout=60, what="b in the peering")
        wait_for(lambda: reconciles(b) == 0, timeout=30, what="b's /metrics")

        # When the active replica stops answering long enough for the standby to take over
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: reconciles(b) >= 2, timeout=LIFETIME + 60, what="b reconciling")
        finally:
            # ... and comes back: it started first, so it is the active one again
            os.kill(a.proc.pid, signal.SIGCONT)

        def paused_now() -> bool:  # kopf's last word on b is a pause
            said = b.log()
            return said.rfind(PAUSED) > said.rfind(RESUMED)

        wait_for(paused_now, timeout=60, what="b paused by kopf")

        # Then the paused replica reconciles nothing while the active one goes on retrying
        def a_reconciled(more: int):
            since = reconciles(a)
            return lambda: reconciles(a) >= since + more

        wait_for(a_reconciled(2), timeout=30, what="a reconciling again")
        wait_for(paused_now, timeout=60, what="b paused by kopf")
        paused_at, said_before = reconciles(b), len(b.log())
        wait_for(a_reconciled(3), timeout=30, what="a reconciling three times more")
        said = b.log()[said_before:]
        # Unless kopf's peering resumed b meanwhile (a's keepalive seen late on a loaded
        # machine: CI saw it once), when b works as a resumed replica, which the end checks.
        if RESUMED not in said:
            assert reconciles(b) == paused_at, "the paused replica reconciled from its frozen cache"
        assert "reconciles wait: paused (peering: another replica is active)" in b.log()

        # When the active replica leaves, the paused one resumes: it lists anew, then reconciles
        a.stop()
        wait_for(lambda: reconciles(b) > paused_at, timeout=LIFETIME + 60, what="b resumed")
        assert "reconciles go on: the watch caches are current" in b.log()
        ready = condition(get_serving(crds, namespace, "victim"), "Ready")
        assert ready["reason"] == "Conflict"
    finally:
        a.stop()
        b.stop()
    for op in (a, b):
        assert op.refusals() == [], "the chart's ServiceAccount lacks a right the operator used"
