"""A Secret that the pods' environment reads, changed in place, rolls the pods: which Secrets
and keys a serving reads, the digest of their values the operator keeps in memory, the pod
template's digest of their versions (never of a value), and the checks that notice a change."""

from __future__ import annotations

import base64
from typing import Any, cast

from modelserving import api
from modelserving.operator.kube import KubeClient
from modelserving.operator.names import SECRETS_CHECKSUM_ANNOTATION
from modelserving.operator.reconcile import Reconciler, _secrets_checksum
from modelserving.operator.render import render_children
from modelserving.operator.secret_checks import check_secrets
from modelserving.operator.secret_refs import (
    SecretRead,
    secret_keys,
    secret_names,
    values_digest,
    versions_checksum,
)
from modelserving.operator.settings import OperatorSettings
from modelserving.operator.spec import ServingSpec

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092")
ENV = [
    {"name": "AWS_REGION", "value": "eu-west-1"},
    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "key"}}},
    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t", "optional": True}}},
    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]


def secret(uid: str = "uid-1", version: str = "1", **values: str) -> dict:
    return {
        "metadata": {"uid": uid, "resourceVersion": version},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def read(**values: str) -> SecretRead:
    return SecretRead.of(secret(**values))


def spec(env: list[dict], env_from: list[dict] | None = None) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "mnist", "namespace": "demo", "uid": "u", "generation": 1},
            "spec": {
                "model": {"version": 1, "basePath": "s3://models/mnist"},
                "auth": {"mode": "none"},
                "server": {"env": env, **({"envFrom": env_from} if env_from else {})},
            },
        }
    )


def pod_annotations(checksum: str | None, env: list[dict] = ENV) -> dict[str, str]:
    children = render_children(spec(env), SETTINGS, 17, checksum)
    deployment = next(c for c in children if c["kind"] == "Deployment")
    return deployment["spec"]["template"]["metadata"]["annotations"]


def test_the_secrets_and_keys_read_are_found_in_the_environment():
    assert secret_keys(ENV) == (("s3", "id", False), ("s3", "key", False), ("tok", "t", True))
    assert secret_names(ENV) == ("s3", "tok")
    assert secret_keys([{"name": "A", "value": "x"}]) == ()


def test_a_changed_value_that_the_pods_read_changes_the_values_digest():
    keys = secret_keys(ENV)
    before = values_digest(keys, {"s3": read(id="a", key="b"), "tok": read()})
    after = values_digest(keys, {"s3": read(id="a", key="c"), "tok": read()})
    assert before and after and before != after


def test_a_changed_value_that_the_pods_do_not_read_leaves_the_values_digest():
    keys = secret_keys(ENV)
    s3 = read(id="a", key="b")
    with_other = read(version="2", id="a", key="b", unrelated="z")
    assert values_digest(keys, {"s3": s3, "tok": read()}) == values_digest(
        keys, {"s3": with_other, "tok": read()}
    )


def test_a_missing_secret_gives_no_digest_unless_it_is_optional():
    keys = secret_keys(ENV)
    s3 = read(id="a", key="b")
    for digest in (values_digest, versions_checksum):
        assert digest(keys, {"s3": None, "tok": read()}) is None
        without_optional = digest(keys, {"s3": s3, "tok": None})
        assert without_optional is not None
        assert without_optional != digest(keys, {"s3": s3, "tok": read(uid="u-t", t="d")})


def test_the_pod_templates_digest_is_of_the_secrets_versions_and_of_no_value():
    keys = secret_keys(ENV)
    s3 = secret(uid="u-s3", version="41", id="AKIAEXAMPLE", key="s3cr3t")
    checksum = versions_checksum(keys, {"s3": SecretRead.of(s3), "tok": None})
    # The same version, whatever the values are said to be: the values are not in it
    s3_told_otherwise = {**s3, "data": {}}
    assert checksum == versions_checksum(keys, {"s3": SecretRead.of(s3_told_otherwise)})
    # An edit (a new resourceVersion) and a Secret made again (a new uid) change it
    edited = {**s3, "metadata": {"uid": "u-s3", "resourceVersion": "42"}}
    made_again = {**s3, "metadata": {"uid": "u-s3-new", "resourceVersion": "41"}}
    for other in (edited, made_again):
        assert checksum != versions_checksum(keys, {"s3": SecretRead.of(other)})


def test_the_digests_keep_no_value():
    digests = read(id="AKIAEXAMPLE", key="s3cr3t").digests
    assert set(digests) == {"id", "key"}
    assert not any("s3cr3t" in d or "AKIA" in d for d in digests.values())


def test_the_pod_template_carries_the_checksum_only_where_secrets_are_read():
    assert pod_annotations("abc")[SECRETS_CHECKSUM_ANNOTATION] == "abc"
    assert SECRETS_CHECKSUM_ANNOTATION not in pod_annotations(None, env=[])


ENV_FROM = [
    {"secretRef": {"name": "whole"}, "prefix": "S_"},
    {"configMapRef": {"name": "settings"}},
]


def test_a_secret_read_whole_by_env_from_counts_every_key():
    keys = secret_keys([], ENV_FROM)
    assert keys == (("whole", "*", False),)
    assert secret_names(ENV, ENV_FROM) == ("s3", "tok", "whole")
    before = values_digest(keys, {"whole": read(a="1", b="2")})
    assert before != values_digest(keys, {"whole": read(a="1", b="3")})
    assert before != values_digest(keys, {"whole": read(a="1", b="2", c="4")})
    assert values_digest(keys, {}) is None


def test_env_from_is_rendered_into_the_tf_serving_container():
    children = render_children(spec([], ENV_FROM), SETTINGS, 17, "abc")
    deployment = next(c for c in children if c["kind"] == "Deployment")
    tfserving = deployment["spec"]["template"]["spec"]["containers"][0]
    assert tfserving["envFrom"] == ENV_FROM


class Secrets:
    """The API server's Secrets as the operator reads them: by name, one get each."""

    def __init__(self, **secrets: dict) -> None:
        self.objects = {("demo", name): body for name, body in secrets.items()}
        self.gets = 0

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        assert kind == "Secret"
        self.gets += 1
        return self.objects.get((namespace, name))


def reconciler(server: Secrets) -> Reconciler:
    return Reconciler(
        kube=cast(KubeClient, server), settings=SETTINGS, topics=cast(Any, None),
        model_ids=cast(Any, None),
    )  # fmt: skip


def deployment_carrying(checksum: str | None) -> dict:
    annotations = {SECRETS_CHECKSUM_ANNOTATION: checksum} if checksum else {}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


async def test_the_pods_roll_when_a_value_they_read_changes_and_not_at_a_restart():
    serving = spec(ENV)
    server = Secrets(s3=secret(version="1", id="a", key="b"))
    rec = reconciler(server)
    first = await _secrets_checksum(rec, serving, None)
    assert first is not None and server.gets == 2  # s3 and the optional tok, by name

    # Another key of the Secret edited: the pods keep the digest they have (no roll)
    server.objects[("demo", "s3")] = secret(version="2", id="a", key="b", region="x")
    assert await _secrets_checksum(rec, serving, deployment_carrying(first)) == first

    # A value the pods read edited: a new digest (a roll)
    server.objects[("demo", "s3")] = secret(version="3", id="a", key="c", region="x")
    second = await _secrets_checksum(rec, serving, deployment_carrying(first))
    assert second not in (None, first)

    # An operator started anew over Secrets as they were: the same digest (no roll)
    restarted = reconciler(server)
    assert await _secrets_checksum(restarted, serving, deployment_carrying(second)) == second

    # The Secret the pods need deleted: the digest the pods have (new pods could not start)
    del server.objects[("demo", "s3")]
    assert await _secrets_checksum(rec, serving, deployment_carrying(second)) == second


async def test_a_secret_whose_version_moved_marks_the_servings_that_read_it():
    server = Secrets(s3=secret(version="1"), other=secret(version="7"))
    rec = reconciler(server)
    readers = {("demo", "s3"): ["mnist", "fashion"], ("demo", "other"): ["iris"]}

    # The first round finds versions no reconcile read yet: it marks nothing (reconciles read)
    await check_secrets(rec, readers)
    assert rec.queue.waiting() == 0 and server.gets == 2

    # A round after s3 was edited marks the two servings that read it, and only them
    server.objects[("demo", "s3")] = secret(version="2")
    await check_secrets(rec, readers)
    marked = {(await rec.queue.get())[0] for _ in range(rec.queue.waiting())}
    assert marked == {("demo", "mnist"), ("demo", "fashion")}

    # A Secret no serving reads any more is forgotten
    await check_secrets(rec, {("demo", "s3"): ["mnist"]})
    assert set(rec.secret_versions) == {("demo", "s3")}
