"""Fixtures of the integration tests: the CRDs installed in the cluster, the operator run for
real over the test's namespace, and the TF Serving stand-in a sidecar forwards to."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support import REPO
from tests.support.chart_account import operator_kubeconfig as operator_kubeconfig_for
from tests.support.operator_process import COUNTER_NAMESPACE, Operator
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def crds(local_env, kube_client):
    """The CRDs from crds/, installed once and ready to list."""
    local_env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    local_env.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{api.PLURAL}.{api.GROUP}",
        "crd/kopfpeerings.kopf.dev",
    )
    objects = client.CustomObjectsApi(kube_client)

    def lists() -> bool:
        try:
            objects.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
            return True
        except ApiException as exc:  # 429 while the new resource's storage initialises
            if exc.status in (404, 429, 503):
                return False
            raise

    wait_for(lists, timeout=30, what="listing ModelServings")
    try:
        client.CoreV1Api(kube_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=COUNTER_NAMESPACE))
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    return objects


@pytest.fixture
def operator_flags() -> Sequence[str]:
    """Flags added to the operator's command line; a test module overrides this to pass its own."""
    return ()


@pytest.fixture
def operator_kubeconfig(crds, local_env, namespace, tmp_path) -> Path:
    """A kubeconfig of the chart's own ServiceAccount, with the chart's RBAC and peering object
    for the test's namespace applied: operators run with the rights the chart grants, never
    as cluster admin."""
    return operator_kubeconfig_for(
        local_env, COUNTER_NAMESPACE, namespace, tmp_path / "operator.kubeconfig"
    )


@pytest.fixture
def operator(
    local_env, namespace, tmp_path, operator_flags, operator_kubeconfig
) -> Iterator[Operator]:
    """An operator for the test's namespace, as the chart's ServiceAccount, stopped at the end."""
    op = Operator(local_env, namespace, tmp_path, operator_flags, kubeconfig=operator_kubeconfig)
    op.start()
    yield op
    op.stop()
    if not op.stopped_cleanly():
        print(op.log()[-4000:], file=sys.stderr)
    # A refusal fails the test even where its assertions did not depend on the refused call.
    assert op.refusals() == [], "the chart's ServiceAccount lacks a right the operator used"


@pytest_asyncio.fixture(loop_scope="session")
async def standin() -> AsyncIterator[tuple[TFServingStandIn, str]]:
    """TF Serving's stand-in, serving half_plus_two in the test's event loop, and its URL."""
    async with running_standin(TFServingStandIn()) as (server, url):
        yield server, url


@pytest.fixture
def upstream(standin: tuple[TFServingStandIn, str]) -> str:
    """The URL of the stand-in: the sidecar's upstream."""
    return standin[1]
