"""The API server restarted while the operator reconciles 100 new servings: every serving ends
Ready with one set of children, and the operator went on by itself (no restart of its own).
The operator runs as the chart's ServiceAccount, through an API server of the cluster that the
test has to itself (a second one, on the same etcd), which it restarts."""

from __future__ import annotations

import collections
import json
import time

import pytest

from modelserving import api
from tests.support.servings import condition, serving_manifest
from tests.support.waiting import wait_for

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow

SERVINGS = 100
# The kinds each serving has exactly one of, or two (the ConfigMaps), with logging off.
CHILDREN = {"Deployment": 1, "Service": 1, "ConfigMap": 2, "NetworkPolicy": 1, "ReplicaSet": 1}


# kopf's default retries of a request span this long; an outage past it would have ended its
# watches (the operator's RetryForever: runtime/kopf_internals, tested against kopf itself).
KOPF_DEFAULT_RETRY_SECONDS = 54


# Right away, as a crashed server restarted by its supervisor; and after an outage longer than
# kopf's default retries of a request.
@pytest.mark.parametrize("down_seconds", [0, 60], ids=["restart", "outage-60s"])
def test_servings_reconciled_across_an_api_server_restart_end_ready_without_duplicates(
    operator, crds, namespace, local_env, spare_apiserver, down_seconds
):
    def servings() -> list[dict]:
        return crds.list_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL)[
            "items"
        ]

    def ready() -> int:
        return sum(condition(s, "Ready").get("status") == "True" for s in servings())

    def deployments() -> int:
        listed = local_env.kubectl("get", "deployments", "-n", namespace, "-o", "name")
        return len(listed.stdout.split())

    # Given 100 new servings, which the operator has begun to reconcile
    started = time.monotonic()
    for i in range(SERVINGS):
        crds.create_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            serving_manifest(f"s{i:03d}", logging={"enabled": False}),
        )
    wait_for(lambda: deployments() >= 10, timeout=120, what="10 Deployments", interval=0.2)

    # When the API server is killed and started again
    ready_before = ready()
    killed = time.time()
    away = spare_apiserver.restart(down_seconds)
    operator.excuse_refusals(killed, time.time())
    print(f"\nthe API server was away {away:.1f} s, with {ready_before} of {SERVINGS} Ready")
    assert not down_seconds or away > KOPF_DEFAULT_RETRY_SECONDS
    assert ready_before < SERVINGS, "the restart came after the operator had finished"

    # Then every serving ends Ready, with the operator that was running all along
    restarted = time.monotonic()
    wait_for(lambda: ready() == SERVINGS, timeout=300, what="all servings Ready", interval=1)
    print(
        f"all {SERVINGS} Ready {time.monotonic() - restarted:.1f} s after the API server "
        f"answered again ({time.monotonic() - started:.1f} s after the first was created)"
    )
    assert operator.proc is not None and operator.proc.poll() is None
    assert operator.starts == 1

    # ... each with one set of children and a modelId of its own
    listed = local_env.kubectl(
        "get",
        "deployments,replicasets,services,configmaps,networkpolicies",
        "-n",
        namespace,
        "-l",
        f"{api.LABEL_MANAGED_BY}={api.MANAGED_BY}",
        "-o",
        "json",
    )
    counts = collections.Counter(
        (item["kind"], item["metadata"]["labels"][api.LABEL_INSTANCE])
        for item in json.loads(listed.stdout)["items"]
    )
    names = [s["metadata"]["name"] for s in servings()]
    wrong = {
        (kind, name): counts[(kind, name)]
        for name in names
        for kind, wanted in CHILDREN.items()
        if counts[(kind, name)] != wanted
    }
    assert wrong == {}
    model_ids = [s["status"]["modelId"] for s in servings()]
    assert len(set(model_ids)) == SERVINGS
