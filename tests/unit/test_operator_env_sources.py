"""A Secret or ConfigMap that the pods' environment reads, changed in place, rolls the pods:
which sources and keys a serving reads, the digest of their values the operator keeps in memory,
the pod template's digest of their versions (never of a value), and the checks that notice a
change."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, cast

from modelserving import api
from modelserving_operator.kube import KubeClient
from modelserving_operator.names import SECRETS_CHECKSUM_ANNOTATION
from modelserving_operator.pod_env.checks import check_sources
from modelserving_operator.pod_env.sources import (
    CONFIG_MAP,
    SECRET,
    SourceRead,
    env_reads,
    env_sources,
    values_digest,
    versions_checksum,
)
from modelserving_operator.reconcile import Reconciler, _sources_checksum
from modelserving_operator.render.manifests import render_children
from modelserving_operator.runtime.workqueue import WorkQueue
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec

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


def config_map(uid: str = "uid-c", version: str = "1", **values: str) -> dict:
    return {"metadata": {"uid": uid, "resourceVersion": version}, "data": values}


def read(**values: str) -> SourceRead:
    return SourceRead.of(SECRET, secret(**values))


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
    assert env_reads(ENV) == (
        (SECRET, "s3", "id", False),
        (SECRET, "s3", "key", False),
        (SECRET, "tok", "t", True),
    )
    assert env_sources(ENV) == ((SECRET, "s3"), (SECRET, "tok"))
    assert env_reads([{"name": "A", "value": "x"}]) == ()


def test_a_changed_value_that_the_pods_read_changes_the_values_digest():
    keys = env_reads(ENV)
    before = values_digest(keys, {(SECRET, "s3"): read(id="a", key="b"), (SECRET, "tok"): read()})
    after = values_digest(keys, {(SECRET, "s3"): read(id="a", key="c"), (SECRET, "tok"): read()})
    assert before and after and before != after


def test_a_changed_value_that_the_pods_do_not_read_leaves_the_values_digest():
    keys = env_reads(ENV)
    s3 = read(id="a", key="b")
    with_other = read(version="2", id="a", key="b", unrelated="z")
    assert values_digest(keys, {(SECRET, "s3"): s3, (SECRET, "tok"): read()}) == values_digest(
        keys, {(SECRET, "s3"): with_other, (SECRET, "tok"): read()}
    )


def test_a_missing_secret_gives_no_digest_unless_it_is_optional():
    keys = env_reads(ENV)
    s3 = read(id="a", key="b")
    for digest in (values_digest, versions_checksum):
        assert digest(keys, {(SECRET, "s3"): None, (SECRET, "tok"): read()}) is None
        without_optional = digest(keys, {(SECRET, "s3"): s3, (SECRET, "tok"): None})
        assert without_optional is not None
        assert without_optional != digest(
            keys, {(SECRET, "s3"): s3, (SECRET, "tok"): read(uid="u-t", t="d")}
        )


def test_the_pod_templates_digest_is_of_the_secrets_versions_and_of_no_value():
    keys = env_reads(ENV)
    s3 = secret(uid="u-s3", version="41", id="AKIAEXAMPLE", key="s3cr3t")
    checksum = versions_checksum(
        keys, {(SECRET, "s3"): SourceRead.of(SECRET, s3), (SECRET, "tok"): None}
    )
    # The same version, whatever the values are said to be: the values are not in it
    s3_told_otherwise = {**s3, "data": {}}
    assert checksum == versions_checksum(
        keys, {(SECRET, "s3"): SourceRead.of(SECRET, s3_told_otherwise)}
    )
    # An edit (a new resourceVersion) and a Secret made again (a new uid) change it
    edited = {**s3, "metadata": {"uid": "u-s3", "resourceVersion": "42"}}
    made_again = {**s3, "metadata": {"uid": "u-s3-new", "resourceVersion": "41"}}
    for other in (edited, made_again):
        assert checksum != versions_checksum(keys, {(SECRET, "s3"): SourceRead.of(SECRET, other)})


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
    keys = env_reads([], ENV_FROM, kinds=(SECRET,))
    assert keys == ((SECRET, "whole", "*", False),)
    assert env_sources(ENV, ENV_FROM) == (
        (CONFIG_MAP, "settings"),
        (SECRET, "s3"),
        (SECRET, "tok"),
        (SECRET, "whole"),
    )
    before = values_digest(keys, {(SECRET, "whole"): read(a="1", b="2")})
    assert before != values_digest(keys, {(SECRET, "whole"): read(a="1", b="3")})
    assert before != values_digest(keys, {(SECRET, "whole"): read(a="1", b="2", c="4")})
    assert values_digest(keys, {}) is None


CONFIG_ENV = [
    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "tuning", "key": "mode"}}},
    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "opt", "key": "x", "optional": True}}},
]


def test_the_config_maps_and_keys_read_are_found_and_kept_apart_from_secrets():
    assert env_reads(CONFIG_ENV, ENV_FROM) == (
        (CONFIG_MAP, "opt", "x", True),
        (CONFIG_MAP, "settings", "*", False),
        (CONFIG_MAP, "tuning", "mode", False),
        (SECRET, "whole", "*", False),
    )
    # An operator that may not read Secrets reads the ConfigMaps alone
    assert env_sources(ENV + CONFIG_ENV, ENV_FROM, kinds=(CONFIG_MAP,)) == (
        (CONFIG_MAP, "opt"),
        (CONFIG_MAP, "settings"),
        (CONFIG_MAP, "tuning"),
    )
    # A ConfigMap and a Secret of one name are two sources
    both = [{"configMapRef": {"name": "x"}}, {"secretRef": {"name": "x"}}]
    assert env_sources([], both) == ((CONFIG_MAP, "x"), (SECRET, "x"))


def test_a_config_maps_value_the_pods_read_changes_the_digests_and_another_key_does_not():
    keys = env_reads(CONFIG_ENV)

    def values(body: dict) -> str | None:
        return values_digest(keys, {(CONFIG_MAP, "tuning"): SourceRead.of(CONFIG_MAP, body)})

    before = values(config_map(mode="fast", other="1"))
    assert before is not None
    assert values(config_map(version="2", mode="fast", other="2")) == before
    assert values(config_map(version="3", mode="slow", other="1")) != before
    # binaryData counts as data does
    binary = {"metadata": {"uid": "b", "resourceVersion": "1"}, "binaryData": {"mode": "AQI="}}
    assert values(binary) not in (None, before)
    # The template's digest is of the versions: an edit, or one made again, changes it
    tuning = SourceRead.of(CONFIG_MAP, config_map(mode="fast"))
    checksum = versions_checksum(keys, {(CONFIG_MAP, "tuning"): tuning})
    for other in (config_map(version="2", mode="fast"), config_map(uid="new", mode="fast")):
        changed = {(CONFIG_MAP, "tuning"): SourceRead.of(CONFIG_MAP, other)}
        assert checksum != versions_checksum(keys, changed)
    # A Secret and a ConfigMap of one name and version are two sources to the digest
    as_secret = SourceRead.of(SECRET, secret(uid="uid-c", mode="fast"))
    assert checksum != versions_checksum(
        env_reads([], [{"secretRef": {"name": "tuning"}}]), {(SECRET, "tuning"): as_secret}
    )


def test_the_pod_templates_digest_of_secrets_alone_is_the_one_pods_made_before_config_maps():
    """Pods whose environment reads Secrets alone, made by an operator before ConfigMaps counted,
    carry a digest of the Secrets' versions by name: the same digest now, so an upgrade rolls
    nothing."""
    keys = env_reads(ENV)
    s3 = SourceRead.of(SECRET, secret(uid="u-s3", version="41"))
    tok = SourceRead.of(SECRET, secret(uid="u-t", version="3"))
    before = sorted({"s3": "u-s3/41", "tok": "u-t/3"}.items())
    made_before = hashlib.sha256(json.dumps(before).encode()).hexdigest()[:32]
    assert versions_checksum(keys, {(SECRET, "s3"): s3, (SECRET, "tok"): tok}) == made_before


def test_env_from_is_rendered_into_the_tf_serving_container():
    children = render_children(spec([], ENV_FROM), SETTINGS, 17, "abc")
    deployment = next(c for c in children if c["kind"] == "Deployment")
    tfserving = deployment["spec"]["template"]["spec"]["containers"][0]
    assert tfserving["envFrom"] == ENV_FROM


class Sources:
    """The API server's Secrets and ConfigMaps as the operator reads them: by name, one get
    each."""

    def __init__(self, **secrets: dict) -> None:
        self.objects = {(SECRET, "demo", name): body for name, body in secrets.items()}
        self.gets: list[tuple[str, str]] = []

    async def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        assert kind in (SECRET, CONFIG_MAP)
        self.gets.append((kind, name))
        return self.objects.get((kind, namespace, name))


def reconciler(server: Sources, settings: OperatorSettings = SETTINGS) -> Reconciler:
    return Reconciler(
        kube=cast(KubeClient, server),
        settings=settings,
        topics=cast(Any, None),
        model_ids=cast(Any, None),
    )


def deployment_carrying(checksum: str | None) -> dict:
    annotations = {SECRETS_CHECKSUM_ANNOTATION: checksum} if checksum else {}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


async def test_the_pods_roll_when_a_value_they_read_changes_and_not_at_a_restart():
    serving = spec(ENV)
    server = Sources(s3=secret(version="1", id="a", key="b"))
    rec = reconciler(server)
    first = await _sources_checksum(rec, serving, None)
    assert first is not None and len(server.gets) == 2  # s3 and the optional tok, by name

    # Another key of the Secret edited: the pods keep the digest they have (no roll)
    server.objects[(SECRET, "demo", "s3")] = secret(version="2", id="a", key="b", region="x")
    assert await _sources_checksum(rec, serving, deployment_carrying(first)) == first

    # A value the pods read edited: a new digest (a roll)
    server.objects[(SECRET, "demo", "s3")] = secret(version="3", id="a", key="c", region="x")
    second = await _sources_checksum(rec, serving, deployment_carrying(first))
    assert second not in (None, first)

    # An operator started anew over Secrets as they were: the same digest (no roll)
    restarted = reconciler(server)
    assert await _sources_checksum(restarted, serving, deployment_carrying(second)) == second

    # The Secret the pods need deleted: the digest the pods have (new pods could not start)
    del server.objects[(SECRET, "demo", "s3")]
    assert await _sources_checksum(rec, serving, deployment_carrying(second)) == second


async def test_the_pods_roll_when_a_config_maps_value_they_read_changes():
    serving = spec([], [{"configMapRef": {"name": "tuning"}}])
    server = Sources()
    server.objects[(CONFIG_MAP, "demo", "tuning")] = config_map(version="1", MODE="fast")
    rec = reconciler(server)
    first = await _sources_checksum(rec, serving, None)
    assert first is not None and server.gets == [(CONFIG_MAP, "tuning")]
    assert rec.sources.versions == {("demo", CONFIG_MAP, "tuning"): "uid-c/1"}

    # A key changed in place: every key is read (envFrom), so a new digest (a roll)
    server.objects[(CONFIG_MAP, "demo", "tuning")] = config_map(version="2", MODE="slow")
    second = await _sources_checksum(rec, serving, deployment_carrying(first))
    assert second not in (None, first)


async def test_an_operator_that_may_not_read_secrets_still_rolls_for_config_maps():
    serving = spec(ENV + CONFIG_ENV)
    server = Sources(s3=secret(id="a", key="b"))
    server.objects[(CONFIG_MAP, "demo", "tuning")] = config_map(mode="fast")
    rec = reconciler(server, OperatorSettings(kafka_bootstrap_servers="k:9092", read_secrets=False))
    queue = WorkQueue()
    assert await _sources_checksum(rec, serving, None) is not None
    assert sorted(server.gets) == [(CONFIG_MAP, "opt"), (CONFIG_MAP, "tuning")]  # no Secret
    # Nor do its checks read a Secret
    readers = {("demo", SECRET, "s3"): ["mnist"], ("demo", CONFIG_MAP, "tuning"): ["mnist"]}
    server.gets.clear()
    await check_sources(rec, readers, queue)
    assert server.gets == [(CONFIG_MAP, "tuning")]
    # Servings that read Secrets alone carry no digest
    assert await _sources_checksum(rec, spec(ENV), None) is None


async def test_a_source_whose_version_moved_marks_the_servings_that_read_it():
    server = Sources(s3=secret(version="1"), other=secret(version="7"))
    server.objects[(CONFIG_MAP, "demo", "s3")] = config_map(version="3")
    rec, queue = reconciler(server), WorkQueue()
    readers = {
        ("demo", SECRET, "s3"): ["mnist", "fashion"],
        ("demo", SECRET, "other"): ["iris"],
        ("demo", CONFIG_MAP, "s3"): ["wine"],
    }

    # The first round finds versions no reconcile read yet: it marks nothing (reconciles read)
    await check_sources(rec, readers, queue)
    assert queue.waiting() == 0 and len(server.gets) == 3

    # A round after the Secret s3 was edited marks the two servings that read it, and only them
    server.objects[(SECRET, "demo", "s3")] = secret(version="2")
    await check_sources(rec, readers, queue)
    marked = {(await queue.get())[0] for _ in range(queue.waiting())}
    assert marked == {("demo", "mnist"), ("demo", "fashion")}

    # The ConfigMap s3 edited marks the serving that reads it
    server.objects[(CONFIG_MAP, "demo", "s3")] = config_map(version="4")
    await check_sources(rec, readers, queue)
    marked = {(await queue.get())[0] for _ in range(queue.waiting())}
    assert marked == {("demo", "wine")}

    # A source no serving reads any more is forgotten
    await check_sources(rec, {("demo", SECRET, "s3"): ["mnist"]}, queue)
    assert set(rec.sources.versions) == {("demo", SECRET, "s3")}


async def test_a_version_a_reconcile_reads_during_a_round_is_compared_with_in_the_next():
    # A serving made while a round's gets are out: its reconcile reads the ConfigMap's version,
    # the round (whose readers are older than the serving) must not forget it, or an edit made
    # before the next round would become that round's first look and never be seen.
    server = Sources(other=secret(version="7"))
    server.objects[(CONFIG_MAP, "demo", "tuning")] = config_map(version="1")
    rec, queue = reconciler(server), WorkQueue()
    get = server.get

    async def get_while_a_reconcile_reads(kind: str, name: str, namespace: str | None = None):
        rec.sources.versions[("demo", CONFIG_MAP, "tuning")] = "uid-c/1"  # the new serving's
        return await get(kind, name, namespace)

    server.get = get_while_a_reconcile_reads  # type: ignore[method-assign]
    await check_sources(rec, {("demo", SECRET, "other"): ["iris"]}, queue)
    server.get = get  # type: ignore[method-assign]

    server.objects[(CONFIG_MAP, "demo", "tuning")] = config_map(version="2")
    await check_sources(
        rec,
        {("demo", SECRET, "other"): ["iris"], ("demo", CONFIG_MAP, "tuning"): ["mnist"]},
        queue,
    )
    marked = {(await queue.get())[0] for _ in range(queue.waiting())}
    assert marked == {("demo", "mnist")}


async def test_a_change_a_reconcile_reads_before_the_check_round_is_told_in_the_log(caplog):
    # The check round compares with the version last read: a reconcile that reads the new
    # version first leaves the round nothing to find, so the reconcile says it saw the change.
    serving = spec(ENV)
    server = Sources(s3=secret(version="1", id="a", key="b"))
    rec = reconciler(server)
    first = await _sources_checksum(rec, serving, None)
    caplog.set_level("INFO", logger="modelserving_operator.reconcile")

    server.objects[(SECRET, "demo", "s3")] = secret(version="2", id="a", key="b", region="x")
    assert await _sources_checksum(rec, serving, deployment_carrying(first)) == first
    await check_sources(rec, {("demo", SECRET, "s3"): ["mnist"]}, WorkQueue())

    said = [r.getMessage() for r in caplog.records if "demo/s3 changed" in r.getMessage()]
    assert said == ["Secret demo/s3 changed: read by the reconcile of mnist"]
