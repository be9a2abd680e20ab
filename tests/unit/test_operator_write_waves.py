"""A serving's children are written in waves, what the pods need before the pods: a write the
API server refuses or does not answer stops the waves, so a Deployment never rolls onto files
its ConfigMap's write did not leave. (The story on a real cluster, with an admission policy:
tests/integration/test_operator_config_writes.py.)"""

from __future__ import annotations

import copy
from typing import Any

from modelserving.operator.kube import KubeError
from modelserving.operator.status import APPLY_FAILED
from tests.unit.test_operator_ownership import ApiServer, apply_children, events  # noqa: F401
from tests.unit.test_operator_render import mnist


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
