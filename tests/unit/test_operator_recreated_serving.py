"""A serving deleted and made anew under its name: the old one's status write and the old one's
deletion reach only what is the old one's (by uid), never the new one's status or binding."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from modelserving import api
from modelserving_operator.kube import KubeClient
from modelserving_operator.names import LABEL_SERVING_UID, made_for
from modelserving_operator.render.rbac import render_cluster_role_binding
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092", sidecar_image="sidecar:1")


def mnist(uid: str) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "mnist", "namespace": "demo", "uid": uid, "generation": 1},
            "spec": {
                "model": {"version": 1, "basePath": "s3://models/mnist"},
                "auth": {"mode": "kubernetes"},
            },
        }
    )


def test_the_binding_names_the_uid_of_the_serving_it_was_made_for():
    binding = render_cluster_role_binding(mnist("uid-new"), SETTINGS)

    assert binding["metadata"]["labels"][LABEL_SERVING_UID] == "uid-new"
    assert made_for(binding, mnist("uid-new"))


def test_the_deleted_servings_handler_leaves_the_binding_of_the_one_made_anew():
    # The new mnist's reconcile has taken the binding over (applied with its uid)
    binding = render_cluster_role_binding(mnist("uid-new"), SETTINGS)

    assert not made_for(binding, mnist("uid-old"))


def test_a_binding_made_before_the_uid_label_is_still_its_servings():
    binding = copy.deepcopy(render_cluster_role_binding(mnist("uid-old"), SETTINGS))
    del binding["metadata"]["labels"][LABEL_SERVING_UID]

    assert made_for(binding, mnist("uid-old"))


class RecordingKube(KubeClient):
    """A KubeClient whose requests are recorded, not sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any, str]] = []

    async def request(  # type: ignore[override]
        self, method: str, path: str, *, body: Any = None, content_type: str = "", **_: Any
    ) -> dict[str, Any]:
        self.sent.append((method, path, body, content_type))
        return {}


def test_the_status_is_written_only_to_the_serving_of_its_uid():
    kube = RecordingKube()
    status = {"modelId": 7, "observedGeneration": 1}

    asyncio.run(kube.write_status(api.KIND, "mnist", "demo", "uid-old", status))

    [(method, path, patch, content_type)] = kube.sent
    assert (method, content_type) == ("PATCH", "application/json-patch+json")
    assert path.endswith(f"/namespaces/demo/{api.PLURAL}/mnist/status")
    # The API server refuses the whole patch (422) when the test fails: a serving made anew
    # under the name has another uid
    assert patch == [
        {"op": "test", "path": "/metadata/uid", "value": "uid-old"},
        {"op": "add", "path": "/status", "value": status},
    ]


def test_a_delete_as_read_names_the_resource_version_it_read():
    kube = RecordingKube()

    asyncio.run(kube.delete("ClusterRoleBinding", "b", resource_version="41"))
    asyncio.run(kube.delete("ClusterRoleBinding", "b"))

    assert [body for _, _, body, _ in kube.sent] == [
        {"propagationPolicy": "Background", "preconditions": {"resourceVersion": "41"}},
        {"propagationPolicy": "Background"},
    ]
