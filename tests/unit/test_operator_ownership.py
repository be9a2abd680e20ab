"""A serving writes only objects that are its own: one that holds a child's name and names
another owner, or none, is left as it is, and the serving's status says Conflict, naming it.
(The story on a real cluster: tests/integration/test_operator_serving.py.)"""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from modelserving_operator import reconcile
from modelserving_operator.kube import KubeClient
from modelserving_operator.names import owned_by
from modelserving_operator.reconcile import Reconciler
from modelserving_operator.render.manifests import render_children
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import CONFLICT
from tests.support.operator_objects import (
    SETTINGS,
    ApiServer,
    apply_children,
    mnist,
    mnist_body,
)

pytestmark = pytest.mark.usefixtures("events")


def someone_elses(kind: str, name: str, **metadata: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "demo", **metadata}}


async def test_a_service_account_of_the_servings_name_made_by_hand_is_left_as_it_is():
    # Given a ServiceAccount named as the serving's sidecar's, made by hand (no labels, so the
    # operator's cache does not hold it)
    theirs = someone_elses("ServiceAccount", "mnist-sidecar", uid="not-the-serving")
    server = ApiServer({("ServiceAccount", "mnist-sidecar"): theirs})
    before = copy.deepcopy(theirs)

    # When the serving's children are applied
    deployment, failure, _ = await apply_children(server, live={})

    # Then the ServiceAccount is not written, and no pods are made to run as it
    assert server.objects[("ServiceAccount", "mnist-sidecar")] == before
    assert ("ServiceAccount", "mnist-sidecar") not in [key for _, key in server.writes]
    assert deployment is None and ("Deployment", "mnist") not in server.objects
    assert {kind for _, (kind, _) in server.writes} == {"ConfigMap"}  # the first wave's rest
    # And the failure is a Conflict that names it and says what to do
    assert failure.reason == CONFLICT
    assert failure.message.startswith("ServiceAccount mnist-sidecar already exists and is not")
    assert "Delete or rename it, or give the serving another name" in failure.message


async def test_an_object_with_the_servings_labels_not_owned_is_neither_written_nor_deleted():
    # Given, in the operator's cache (it carries the serving's labels), a Deployment and an
    # Ingress the serving does not own; the spec asks for the Deployment, not for an Ingress
    labels = next(m for m in render_children(mnist(), SETTINGS, 7) if m["kind"] == "Deployment")[
        "metadata"
    ]["labels"]
    deployment = someone_elses("Deployment", "mnist", labels=labels, spec={"replicas": 5})
    ingress = someone_elses("Ingress", "mnist", labels=labels)
    objects = {("Deployment", "mnist"): deployment, ("Ingress", "mnist"): ingress}
    server = ApiServer(copy.deepcopy(objects))

    # When the serving's children are applied
    _, failure, _ = await apply_children(server, live=copy.deepcopy(objects))

    # Then nothing is written: neither is touched, nor anything that would use them
    assert server.writes == []
    assert server.objects == objects
    assert failure.reason == CONFLICT and failure.message.startswith("Deployment mnist already")


async def test_the_servings_own_child_the_cache_has_not_seen_yet_is_left_or_applied():
    # Given the serving's own ServiceAccount, made by an earlier reconcile, not yet in the cache
    ours = next(m for m in render_children(mnist(), SETTINGS, 7) if m["kind"] == "ServiceAccount")
    server = ApiServer({("ServiceAccount", "mnist-sidecar"): copy.deepcopy(ours)})

    _, failure, _ = await apply_children(server, live={})

    # Then it is left as it is (its create refused, it was found as the manifest has it), and
    # the rest is written
    assert failure is None
    assert ("apply", ("ServiceAccount", "mnist-sidecar")) not in server.writes
    assert ("create", ("Deployment", "mnist")) in server.writes

    # And one changed since (by hand) is applied over
    changed = copy.deepcopy(ours)
    label = next(iter(changed["metadata"]["labels"]))
    changed["metadata"]["labels"][label] = "changed-by-hand"
    server = ApiServer({("ServiceAccount", "mnist-sidecar"): changed})
    _, failure, _ = await apply_children(server, live={})
    assert failure is None
    assert ("apply", ("ServiceAccount", "mnist-sidecar")) in server.writes


def test_a_cluster_scoped_child_is_the_servings_when_its_labels_name_the_serving():
    spec = mnist(auth={"mode": "kubernetes"})
    binding = next(
        m for m in render_children(spec, SETTINGS, 7) if m["kind"] == "ClusterRoleBinding"
    )
    assert owned_by(binding, spec)
    assert not owned_by({"metadata": {"name": binding["metadata"]["name"]}}, spec)
    assert not owned_by(
        binding,
        ServingSpec.from_body(
            {**mnist_body(), "metadata": {"name": "mnist", "namespace": "other", "uid": "u-2"}}
        ),
    )


TO_ZERO = {"enabled": True, "metric": "concurrency", "minReplicas": 0}


async def test_an_endpoint_slice_of_the_servings_name_not_its_own_is_never_taken_over():
    from modelserving_operator.reconcile import _endpoints
    from modelserving_operator.runtime.cached import CachedObject

    spec = ServingSpec.from_body(mnist_body(autoscaling=TO_ZERO))
    pods = [{"name": "mnist-a", "ready": True, "ip": "10.0.0.5"}]
    rec = Reconciler(
        kube=cast(KubeClient, None),
        settings=SETTINGS,
        topics=cast(Any, None),
        model_ids=cast(Any, None),
    )

    # Given one made by hand, which the operator's cache does not hold (no labels of ours)
    theirs = someone_elses("EndpointSlice", "mnist", uid="not-the-serving")
    server = ApiServer({("EndpointSlice", "mnist"): theirs})
    rec.kube = cast(KubeClient, server)
    taken = await _endpoints(rec, spec, [], pods)
    # Then the create is refused (409) and nothing else is tried
    assert server.objects[("EndpointSlice", "mnist")] == theirs
    assert server.writes == []
    # And the status is to say Conflict, naming it and what to do
    assert taken is not None
    failure = reconcile._taken_failure(spec, [taken])
    assert failure.reason == CONFLICT
    assert failure.message.startswith("EndpointSlice mnist already exists and is not")

    # Given one in the cache (it carries the serving's labels) that names another owner
    cached = CachedObject.of(
        someone_elses("EndpointSlice", "mnist", ownerReferences=[{"uid": "another"}]),
        "EndpointSlice",
    )
    server = ApiServer({})
    rec.kube = cast(KubeClient, server)
    taken = await _endpoints(rec, spec, [cached], pods)
    assert server.writes == []  # neither applied nor deleted
    assert taken is not None and taken["metadata"]["name"] == "mnist"
    # Nor deleted when the serving no longer may go to zero, and then no Conflict: not needed
    up = ServingSpec.from_body(mnist_body())
    assert await _endpoints(rec, up, [cached], pods) is None and server.writes == []

    # And with none, the serving's own is made, naming its ready pod
    assert await _endpoints(rec, spec, [], pods) is None
    assert server.writes == [("create", ("EndpointSlice", "mnist"))]
    made = server.objects[("EndpointSlice", "mnist")]
    assert [e["addresses"] for e in made["endpoints"]] == [["10.0.0.5"]]

    # And its own, made by an earlier reconcile and not yet in the cache, is no Conflict: left
    # as it is when it names the same pods, applied when they changed
    assert await _endpoints(rec, spec, [], pods) is None
    assert server.writes == [("create", ("EndpointSlice", "mnist"))]
    moved = [{"name": "mnist-b", "ready": True, "ip": "10.0.0.6"}]
    assert await _endpoints(rec, spec, [], moved) is None
    assert server.writes[1:] == [("apply", ("EndpointSlice", "mnist"))]
