"""Fixtures of the integration tests: the CRDs installed in the cluster, the operator run for
real over the test's namespace, and the TF Serving stand-in a sidecar forwards to."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelserving import api
from tests.support import REPO
from tests.support.operator_process import COUNTER_NAMESPACE, Operator
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def crds(local_env, kube_client):
    """The CRDs from crds/, installed once and ready to list."""
    local_env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    local_env.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        f"crd/{api.PLURAL}.{api.GROUP}", "crd/kopfpeerings.kopf.dev",
    )  # fmt: skip
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
def operator(crds, local_env, namespace, tmp_path, operator_flags) -> Iterator[Operator]:
    """An operator for the test's namespace (with kopf's peering object), stopped at the end."""
    peering = {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
        "metadata": {"name": "modelserving", "namespace": namespace},
    }  # fmt: skip
    crds.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)
    op = Operator(local_env, namespace, tmp_path, operator_flags)
    op.start()
    yield op
    op.stop()
    if not op.stopped_cleanly():
        print(op.log()[-4000:], file=sys.stderr)


@pytest_asyncio.fixture(loop_scope="session")
async def standin() -> AsyncIterator[tuple[TFServingStandIn, str]]:
    """TF Serving's stand-in, serving half_plus_two in the test's event loop, and its URL."""
    async with running_standin(TFServingStandIn()) as (server, url):
        yield server, url


@pytest.fixture
def upstream(standin: tuple[TFServingStandIn, str]) -> str:
    """The URL of the stand-in: the sidecar's upstream."""
    return standin[1]
