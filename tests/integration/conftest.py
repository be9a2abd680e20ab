"""Fixtures of the integration tests: the CRDs installed in the cluster, the operator run for
real over the test's namespace, and the TF Serving stand-in a sidecar forwards to.

A module that sets `SHARED_OPERATOR = True` (or to a list of the operator's flags) runs one
operator for its tests that take the `operator` fixture, each in a namespace of its own that
this operator watches (made when the first of them begins): a test that only makes servings and
looks at what the operator does with them need not wait for an operator of its own. A test
that stops or restarts the operator, or counts what it logs, is marked `own_operator` and gets
one to itself, as does one that parametrizes `operator_flags` or takes a part of its own to take
down (`kafka_broker`, `spare_apiserver`): its operator talks to that part."""

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
from tests.support.chart_account import activator_kubeconfig as activator_kubeconfig_for
from tests.support.chart_account import operator_kubeconfig as operator_kubeconfig_for
from tests.support.namespaces import delete_namespaces, make_namespaces
from tests.support.operator_process import COUNTER_NAMESPACE, Operator
from tests.support.tfserving_standin import TFServingStandIn, running_standin
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def crds(local_env, kube_client):
    """The CRDs from crds/, installed once and ready to list."""
    local_env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    extensions = client.ApiextensionsV1Api(kube_client)

    def established() -> bool:
        # Read here rather than by `kubectl wait`, which fails on a CRD so new that it has no
        # status conditions yet instead of waiting for them.
        return all(
            any(
                c.type == "Established" and c.status == "True"
                for c in extensions.read_custom_resource_definition(name).status.conditions or []
            )
            for name in (f"{api.PLURAL}.{api.GROUP}", "kopfpeerings.kopf.dev")
        )

    wait_for(established, timeout=60, what="the CRDs Established")
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


class SharedOperator:
    """One operator over the namespaces of the module's tests that share it."""

    def __init__(self, operator: Operator, namespaces: dict[str, str]) -> None:
        self.operator = operator
        self.namespaces = namespaces  # by test node id


def _shares_the_operator(item: pytest.Item) -> bool:
    return (
        getattr(getattr(item, "module", None), "SHARED_OPERATOR", False)
        and "operator" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("own_operator") is None
        and "operator_flags" not in getattr(getattr(item, "callspec", None), "params", {})
        and not OWN_PARTS.intersection(getattr(item, "fixturenames", ()))
    )


# The fixtures of parts a test has to itself: its operator is given them.
OWN_PARTS = frozenset({"kafka_broker", "spare_apiserver"})


@pytest.fixture(scope="module")
def shared_operator(
    request: pytest.FixtureRequest, crds, local_env, kube_client, tmp_path_factory
) -> Iterator[SharedOperator]:
    """The module's one operator (SHARED_OPERATOR), started with the first test that shares it
    (a test with an operator of its own before it runs alone)."""
    sharing = [
        item
        for item in request.session.items
        if getattr(item, "module", None) is request.module and _shares_the_operator(item)
    ]
    names = make_namespaces(kube_client, len(sharing))
    log_dir = tmp_path_factory.mktemp("shared-operator")
    kubeconfig = operator_kubeconfig_for(
        local_env, COUNTER_NAMESPACE, ",".join(names), log_dir / "operator.kubeconfig"
    )
    shared = request.module.SHARED_OPERATOR
    flags = list(shared) if isinstance(shared, (list, tuple)) else []
    op = Operator(local_env, names, log_dir, flags, kubeconfig=kubeconfig)
    op.start()
    yield SharedOperator(op, {item.nodeid: name for item, name in zip(sharing, names, strict=True)})
    op.stop()
    if not op.stopped_cleanly():
        print(op.log()[-4000:], file=sys.stderr)
    delete_namespaces(kube_client, names)
    assert op.refusals() == [], "the chart's ServiceAccount lacks a right the operator used"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client) -> Iterator[str]:
    """The test's own namespace: made for it, or (a test sharing the module's operator) the
    one made for it when the module's first such test began, which that operator watches."""
    if _shares_the_operator(request.node):  # the shared operator starts with the first of them
        shared: SharedOperator = request.getfixturevalue("shared_operator")
        yield shared.namespaces[request.node.nodeid]
        return
    (name,) = make_namespaces(kube_client, 1)
    yield name
    delete_namespaces(kube_client, [name])


@pytest.fixture
def operator_kubeconfig(
    request: pytest.FixtureRequest, crds, local_env, namespace, tmp_path
) -> Path:
    """A kubeconfig of the chart's own ServiceAccount, with the chart's RBAC and peering object
    for the test's namespace applied: operators run with the rights the chart grants, never
    as cluster admin. It reaches the test's own API server when it has one."""
    server = None
    if "spare_apiserver" in request.fixturenames:
        server = request.getfixturevalue("spare_apiserver").kubeconfig
    return operator_kubeconfig_for(
        local_env, COUNTER_NAMESPACE, namespace, tmp_path / "operator.kubeconfig", server=server
    )


@pytest.fixture
def operator(
    request: pytest.FixtureRequest, local_env, namespace, tmp_path, operator_flags
) -> Iterator[Operator]:
    """An operator for the test's namespace, as the chart's ServiceAccount, stopped at the end
    (or the module's shared one: see the module's docstring)."""
    if _shares_the_operator(request.node):
        shared: SharedOperator = request.getfixturevalue("shared_operator")
        yield shared.operator
        return
    operator_kubeconfig = request.getfixturevalue("operator_kubeconfig")
    bootstrap = None
    if "kafka_broker" in request.fixturenames:
        bootstrap = request.getfixturevalue("kafka_broker").bootstrap
    op = Operator(
        local_env,
        namespace,
        tmp_path,
        operator_flags,
        kubeconfig=operator_kubeconfig,
        kafka_bootstrap=bootstrap,
    )
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


@pytest.fixture(scope="module")
def activator_kubeconfig(crds, local_env, tmp_path_factory) -> str:
    """A kubeconfig of the chart's activator ServiceAccount, with the chart's ClusterRole for it
    applied: activators run with the rights the chart grants, never as cluster admin."""
    dest = tmp_path_factory.mktemp("activator") / "activator.kubeconfig"
    return str(activator_kubeconfig_for(local_env, COUNTER_NAMESPACE, dest))
