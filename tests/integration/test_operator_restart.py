"""The operator over many servings, on the real cluster: a restart over servings that are as
they should be writes nothing, neither objects (no resourceVersion moves) nor Events."""

from __future__ import annotations

import json
import re
import time

import pytest
from kubernetes import client

from modelserving import api
from tests.support.servings import condition, serving_manifest
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

SERVINGS = 30
# Every kind the operator or the cluster's controllers write for a serving.
KINDS = (
    "modelservings,deployments,replicasets,pods,services,configmaps,serviceaccounts,"
    "rolebindings,networkpolicies"
)


def caught_up(log: str) -> tuple[int, int] | None:
    """(servings, writes) of the operator's last "caught up" line, if it has logged one."""
    found = re.findall(r"caught up: (\d+) servings reconciled, (\d+) writes", log)
    return tuple(map(int, found[-1])) if found else None


def test_a_restart_over_many_unchanged_servings_writes_nothing(
    operator, crds, kube_client, namespace, local_env
):
    # Given 30 servings, all Ready (logging off: another test's broker outage must not count)
    for i in range(SERVINGS):
        crds.create_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            serving_manifest(f"s{i:02d}", logging={"enabled": False}),
        )

    def ready() -> int:
        items = crds.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)
        return sum(condition(s, "Ready").get("status") == "True" for s in items["items"])

    started = time.monotonic()
    wait_for(lambda: ready() == SERVINGS, timeout=90, what="all servings Ready", interval=1)
    print(f"\n{SERVINGS} servings Ready after {time.monotonic() - started:.1f} s")

    def versions() -> dict[str, str]:
        listed = json.loads(local_env.kubectl("get", KINDS, "-n", namespace, "-o", "json").stdout)
        return {
            f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
            for i in listed["items"]
        }

    core = client.CoreV1Api(kube_client)

    def events() -> int:
        return sum(e.count or 1 for e in core.list_namespaced_event(namespace).items)

    # Settled: the operator has nothing left to do, and two reads a moment apart agree
    wait_for(
        lambda: (c := caught_up(operator.log())) and c[0] == SERVINGS,
        timeout=60,
        what="the operator caught up",
    )
    before = wait_for(
        lambda: (v := versions()) == versions() and v, timeout=30, what="settled servings"
    )
    events_before = events()

    # When the operator restarts
    operator.stop()
    operator.start()
    reconciled = wait_for(
        lambda: (c := caught_up(operator.log())) and c[0] == SERVINGS and c,
        timeout=60,
        what="the restarted operator to reconcile every serving",
    )

    # Then it wrote nothing: no object moved, no Event was added
    after = versions()
    assert sorted(k for k in after if after[k] != before.get(k)) == []
    assert events() == events_before
    assert reconciled == (SERVINGS, 0)
