"""A Secret that the pods' environment reads, changed in place, rolls the pods: which Secrets
and keys a serving reads, their digests, and the pod template's checksum of them."""

from __future__ import annotations

import base64

from modelserving import api
from modelserving.operator.names import SECRETS_CHECKSUM_ANNOTATION
from modelserving.operator.render import render_children
from modelserving.operator.secret_refs import (
    key_digests,
    secret_keys,
    secret_names,
    secrets_checksum,
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


def secret(**values: str) -> dict:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


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


def test_a_changed_value_that_the_pods_read_changes_the_checksum():
    keys = secret_keys(ENV)
    before = secrets_checksum(keys, {"s3": key_digests(secret(id="a", key="b")), "tok": {}})
    after = secrets_checksum(keys, {"s3": key_digests(secret(id="a", key="c")), "tok": {}})
    assert before and after and before != after


def test_a_changed_value_that_the_pods_do_not_read_leaves_the_checksum():
    keys = secret_keys(ENV)
    s3 = key_digests(secret(id="a", key="b"))
    with_other = key_digests(secret(id="a", key="b", unrelated="z"))
    assert secrets_checksum(keys, {"s3": s3, "tok": {}}) == secrets_checksum(
        keys, {"s3": with_other, "tok": {}}
    )


def test_a_missing_secret_gives_no_checksum_unless_it_is_optional():
    keys = secret_keys(ENV)
    s3 = key_digests(secret(id="a", key="b"))
    assert secrets_checksum(keys, {"s3": None, "tok": {}}) is None
    without_optional = secrets_checksum(keys, {"s3": s3, "tok": None})
    assert without_optional is not None
    assert without_optional != secrets_checksum(keys, {"s3": s3, "tok": {"t": "d"}})


def test_the_digests_keep_no_value():
    digests = key_digests(secret(id="AKIAEXAMPLE", key="s3cr3t"))
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
    before = secrets_checksum(keys, {"whole": key_digests(secret(a="1", b="2"))})
    assert before != secrets_checksum(keys, {"whole": key_digests(secret(a="1", b="3"))})
    assert before != secrets_checksum(keys, {"whole": key_digests(secret(a="1", b="2", c="4"))})
    assert secrets_checksum(keys, {}) is None


def test_env_from_is_rendered_into_the_tf_serving_container():
    children = render_children(spec([], ENV_FROM), SETTINGS, 17, "abc")
    deployment = next(c for c in children if c["kind"] == "Deployment")
    tfserving = deployment["spec"]["template"]["spec"]["containers"][0]
    assert tfserving["envFrom"] == ENV_FROM
