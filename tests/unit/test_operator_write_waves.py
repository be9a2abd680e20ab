"""A serving's children are written in waves, what the pods need before the pods: a write the
API server refuses or does not answer stops the waves, so a Deployment never rolls onto files
its ConfigMap's write did not leave. (The story on a real cluster, with an admission policy:
tests/integration/test_operator_config_writes.py.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelserving_operator.kube import KubeError
from modelserving_operator.render.manifests import render_children
from modelserving_operator.status.conditions import APPLY_FAILED
from tests.support.operator_objects import SETTINGS, ApiServer, apply_children, mnist

pytestmark = pytest.mark.usefixtures("events")


class RefusingApiServer(ApiServer):
    """An API server whose writes of one kind fail with `error`."""

    def __init__(self, objects: dict[Any, dict[str, Any]], kind: str, error: KubeError) -> None:
        super().__init__(objects)
        self.kind, self.error = kind, error

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == self.kind:
            raise self.error
        return await super().create(manifest)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == self.kind:
            raise self.error
        return await super().apply(manifest)


async def test_a_refused_configmap_write_writes_no_deployment_and_says_which_write_failed():
    for error in (
        KubeError(403, 'admission policy "no-config" denied request'),
        KubeError(429, "too many requests"),
        KubeError(0, "POST /api/v1/namespaces/demo/configmaps: TimeoutError"),
    ):
        # Given an API server that refuses the serving's ConfigMaps
        server = RefusingApiServer({}, "ConfigMap", error)

        # When the serving's children are written
        deployment, failure, done = await apply_children(server, live={})

        # Then neither the Deployment nor what uses it is written
        kinds = {kind for _, (kind, _) in server.writes}
        assert kinds == {"ServiceAccount"}, error  # the first wave's other write
        assert deployment is None
        # And the failure names the ConfigMap's write and the API server's words
        assert failure is not None and failure.reason == APPLY_FAILED
        assert failure.message.startswith("applying ConfigMap mnist-"), failure.message
        assert error.message in failure.message
        assert done["Created"] == ["ServiceAccount mnist-sidecar"]


async def test_once_the_configmap_write_goes_through_the_rest_is_written():
    # Given a first reconcile whose ConfigMap writes were refused
    server = RefusingApiServer({}, "ConfigMap", KubeError(403, "denied"))
    await apply_children(server, live={})

    # When the refusal is lifted and the serving is reconciled again
    server.kind = "none"
    live = copy.deepcopy(server.objects)
    deployment, failure, _ = await apply_children(server, live=live)

    # Then everything is written, the Deployment after its ConfigMaps
    assert failure is None and deployment is not None
    order = [kind for _, (kind, _) in server.writes]
    assert "Deployment" in order
    assert max(i for i, k in enumerate(order) if k == "ConfigMap") < order.index("Deployment")


async def test_a_refused_service_write_leaves_the_deployment_written_and_no_autoscaler():
    # The Service goes in the Deployment's wave: a refusal of it stops only the wave after
    # (the autoscaler), and says so
    server = RefusingApiServer({}, "Service", KubeError(422, "invalid"))
    spec = mnist(autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 3})
    deployment, failure, _ = await apply_children(server, live={}, spec=spec)

    kinds = {kind for _, (kind, _) in server.writes}
    assert "Deployment" in kinds and "HorizontalPodAutoscaler" not in kinds
    assert deployment is not None
    assert failure is not None and failure.message.startswith("applying Service mnist")


class ApiServerWithReplicaSets(ApiServer):
    """An API server that lists the serving's ReplicaSets, each a pod template."""

    def __init__(self, objects: dict[Any, dict[str, Any]], templates: list[dict]) -> None:
        super().__init__(objects)
        self.templates = templates
        self.lists = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        assert (method, path) == ("GET", "/apis/apps/v1/namespaces/demo/replicasets")
        self.lists += 1
        return {"items": [{"spec": {"template": t}} for t in self.templates]}


def rendered(spec: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in render_children(spec, SETTINGS, 7)}


async def test_an_old_configmap_stays_while_a_replicaset_names_it_and_goes_after():
    # Given a serving at version 1, all its children written, and its spec now at version 2
    old = rendered(mnist())
    old_configmaps = {k for k in old if k[0] == "ConfigMap"}
    old_template = old[("Deployment", "mnist")]["spec"]["template"]
    server = ApiServerWithReplicaSets(copy.deepcopy(old), [old_template])
    new_spec = mnist(model={"version": 2, "basePath": "s3://models/mnist"})

    # When the new spec is written while the old ReplicaSet still has its pods
    deployment, failure, done = await apply_children(server, copy.deepcopy(old), new_spec)

    # Then the new ConfigMaps are made, the Deployment names them, and the old ones stay
    assert failure is None and done["Deleted"] == []
    assert old_configmaps <= set(server.objects)
    new_configmaps = {k for k in rendered(new_spec) if k[0] == "ConfigMap"}
    assert new_configmaps.isdisjoint(old_configmaps) and new_configmaps <= set(server.objects)
    assert all(server.objects[k] == old[k] for k in old_configmaps)  # as they were
    assert all(("create", k) in server.writes for k in new_configmaps)

    # When no ReplicaSet names them any more (the deployment controller deleted the old one)
    server.templates = [deployment["spec"]["template"]]
    live = copy.deepcopy(server.objects)
    _, failure, done = await apply_children(server, live, new_spec)

    # Then they go, and nothing else is written
    assert failure is None
    assert sorted(done["Deleted"]) == sorted(f"ConfigMap {n}" for _, n in old_configmaps)
    assert old_configmaps.isdisjoint(server.objects)


async def test_no_old_configmap_goes_when_a_write_failed_or_replicasets_cannot_be_listed():
    old = rendered(mnist())
    new_spec = mnist(model={"version": 2, "basePath": "s3://models/mnist"})

    # A refused Deployment write: the old pods are all there is
    server = RefusingApiServer(copy.deepcopy(old), "Deployment", KubeError(403, "denied"))
    _, failure, done = await apply_children(server, copy.deepcopy(old), new_spec)
    assert failure is not None and done["Deleted"] == []

    # ReplicaSets not listed: kept too
    class Unlisted(ApiServerWithReplicaSets):
        async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
            raise KubeError(403, "replicasets is forbidden")

    server = Unlisted(copy.deepcopy(old), [])
    _, failure, done = await apply_children(server, copy.deepcopy(old), new_spec)
    assert failure is None and done["Deleted"] == []


async def test_a_serving_without_old_configmaps_lists_no_replicasets():
    server = ApiServerWithReplicaSets({}, [])
    await apply_children(server, live={})
    live = copy.deepcopy(server.objects)
    server.writes.clear()
    _, failure, _ = await apply_children(server, live)
    assert failure is None and server.writes == [] and server.lists == 0
