"""What the operator's settings let a serving ask for beyond itself: its Ingress's annotations
and its Kafka topic."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest

from modelserving import api
from modelserving_operator import reconcile
from modelserving_operator.policy import (
    INGRESS_REFUSED,
    SPOOL_CLAIM_SHARED,
    TOPIC_REFUSED,
    annotation_allowed,
    refused_degraded,
)
from modelserving_operator.render.config_maps import render_sidecar_config
from modelserving_operator.render.manifests import render_children
from modelserving_operator.settings import (
    DEFAULT_INGRESS_ALLOWED_ANNOTATIONS,
    OperatorSettings,
    SettingsError,
    configure_parser,
    settings_from,
)
from modelserving_operator.spec import ServingSpec
from modelserving_operator.status.conditions import Condition, deployment_conditions
from modelserving_sidecar.config import LoggingMode, parse_config

SETTINGS = OperatorSettings(kafka_bootstrap_servers="kafka:9092")


def serving(**spec) -> ServingSpec:
    return ServingSpec.from_body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "mnist", "namespace": "team-a", "uid": "u-1"},
            "spec": {"model": {"version": 1, "basePath": "s3://models/mnist"}, **spec},
        }
    )


def with_ingress(annotations: dict[str, str]) -> ServingSpec:
    return serving(ingress={"enabled": True, "host": "m.example.com", "annotations": annotations})


def ingresses(spec: ServingSpec, settings: OperatorSettings = SETTINGS) -> list[dict]:
    return [c for c in render_children(spec, settings, 17) if c["kind"] == "Ingress"]


def settings(**environ: str) -> OperatorSettings:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return settings_from(parser.parse_args([]), environ)


# ---- Ingress annotations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "nginx.ingress.kubernetes.io/proxy-body-size",
        "nginx.ingress.kubernetes.io/rewrite-target",
        "nginx.ingress.kubernetes.io/auth-url",
        "cert-manager.io/cluster-issuer",
    ],
)
def test_by_default_the_common_controller_and_certificate_annotations_reach_the_ingress(key):
    [ingress] = ingresses(with_ingress({key: "x"}))

    assert ingress["metadata"]["annotations"] == {key: "x"}
    assert with_ingress({key: "x"}).ingress_refusal(SETTINGS) is None


@pytest.mark.parametrize(
    "key",
    [
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/server-snippet",
        "nginx.ingress.kubernetes.io/auth-snippet",
        "nginx.ingress.kubernetes.io/stream-snippet",
        "nginx.ingress.kubernetes.io/modsecurity-snippet",
        "haproxy.org/backend-config-snippet",
        "alb.ingress.kubernetes.io/group.name",
    ],
)
def test_by_default_a_snippet_or_another_controllers_annotation_gets_no_ingress(key):
    spec = with_ingress({"cert-manager.io/cluster-issuer": "letsencrypt", key: "deny all;"})

    # Not the Ingress without the annotation: that one could be more open than its author meant.
    assert ingresses(spec) == []
    refusal = spec.ingress_refusal(SETTINGS)
    assert refusal is not None
    assert key in refusal and "cert-manager.io/cluster-issuer" not in refusal
    assert "--ingress-allowed-annotations" in refusal
    assert "servingPolicy.ingressAllowedAnnotations" in refusal


def test_a_refusal_names_every_refused_annotation_once():
    spec = with_ingress(
        {
            "nginx.ingress.kubernetes.io/server-snippet": "a",
            "nginx.ingress.kubernetes.io/configuration-snippet": "b",
            "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        }
    )

    refusal = spec.ingress_refusal(SETTINGS) or ""

    assert "annotations nginx.ingress.kubernetes.io/configuration-snippet, " in refusal
    assert "nginx.ingress.kubernetes.io/server-snippet are not allowed" in refusal
    assert "ssl-redirect" not in refusal


def test_a_serving_without_an_ingress_is_never_refused():
    spec = serving(ingress={"enabled": False, "annotations": {"x/server-snippet": "a"}})

    assert spec.ingress_refusal(SETTINGS) is None


def test_the_platform_team_may_allow_more_or_less():
    snippet = with_ingress({"nginx.ingress.kubernetes.io/configuration-snippet": "a"})
    anything = settings(MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS="*")
    nothing = settings(MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS="")
    traefik = settings(MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS="traefik.ingress.kubernetes.io/*")

    assert len(ingresses(snippet, anything)) == 1
    assert ingresses(with_ingress({"cert-manager.io/issuer": "a"}), nothing) == []
    assert "which allows none" in (with_ingress({"a/b": "c"}).ingress_refusal(nothing) or "")
    assert len(ingresses(with_ingress({"traefik.ingress.kubernetes.io/a": "b"}), traefik)) == 1
    assert len(ingresses(with_ingress({}), nothing)) == 1  # no annotation: nothing to refuse


def test_degraded_says_the_ingress_is_refused_unless_it_tells_a_fault_already():
    available = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
        },
    }
    refusal = with_ingress({"a.io/server-snippet": "x"}).ingress_refusal(SETTINGS) or ""

    ready, progressing, degraded = refused_degraded(deployment_conditions(available), refusal)
    stuck = [Condition("Degraded", True, "ProgressDeadlineExceeded", "the rollout is stuck")]

    assert ready.status and not progressing.status  # the serving answers in the cluster
    assert (degraded.status, degraded.reason, degraded.message) == (True, INGRESS_REFUSED, refusal)
    assert refused_degraded(stuck, refusal) == stuck


def test_a_refusing_glob_wins_wherever_it_stands():
    globs = ("!*-snippet", "nginx.ingress.kubernetes.io/*")

    assert annotation_allowed("nginx.ingress.kubernetes.io/ssl-redirect", globs)
    assert not annotation_allowed("nginx.ingress.kubernetes.io/server-snippet", globs)
    assert not annotation_allowed("nginx.ingress.kubernetes.io/server-snippet", globs[::-1])
    assert not annotation_allowed("cert-manager.io/issuer", globs)


def test_the_allowed_annotations_setting_is_a_list_of_globs_and_a_bad_one_is_named():
    assert OperatorSettings().ingress_allowed_annotations == DEFAULT_INGRESS_ALLOWED_ANNOTATIONS
    parsed = settings(MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS="a.io/*, !*-snippet,a.io/*")
    assert parsed.ingress_allowed_annotations == ("a.io/*", "!*-snippet")

    with pytest.raises(SettingsError, match=r"--ingress-allowed-annotations.*'a\.io/\{x\}'"):
        settings(MODELSERVING_INGRESS_ALLOWED_ANNOTATIONS="a.io/*,a.io/{x}")


# ---- the Kafka topic -----------------------------------------------------------------------


def logging_to(topic: str | None) -> ServingSpec:
    return serving(logging={"kafka": {"topic": topic}} if topic else {})


def logged_topic(spec: ServingSpec, settings: OperatorSettings = SETTINGS) -> str | None:
    """The topic the sidecars write to, as they parse their config; None: they log nothing."""
    config = parse_config(render_sidecar_config(spec, settings, 17))
    return config.logging.topic if config.logging.mode is not LoggingMode.NONE else None


def test_the_default_topic_is_of_the_servings_namespace_and_always_logged_to():
    assert logging_to(None).topic == "team-a.mnist.inference"
    assert logged_topic(logging_to(None)) == "team-a.mnist.inference"
    assert logging_to(None).topic_refusal(SETTINGS) is None


@pytest.mark.parametrize("topic", ["team-a.fraud", "team-a.mnist.inference", "team-a.x_y-z"])
def test_a_topic_that_starts_with_the_namespace_and_a_dot_is_logged_to(topic):
    assert logging_to(topic).topic_refusal(SETTINGS) is None
    assert logged_topic(logging_to(topic)) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "team-b.mnist.inference",  # another namespace's serving's default topic
        "mnist-inference",
        "team-ab.mnist",  # another namespace whose name starts like this one's
        "team-a",
        "team-a_mnist",  # Kafka mixes . and _ up in metric names, never in topic names
    ],
)
def test_a_topic_of_another_namespace_or_of_none_is_refused_and_nothing_is_logged(topic):
    spec = logging_to(topic)

    refusal = spec.topic_refusal(SETTINGS) or ""

    assert not spec.logging_on(SETTINGS)
    assert logged_topic(spec) is None
    assert f"spec.logging.kafka.topic {topic} does not start with" in refusal
    assert "(team-a.)" in refusal and "team-a.NAME.inference" in refusal
    assert "--any-kafka-topic" in refusal and "servingPolicy.anyKafkaTopic" in refusal


def test_the_platform_team_may_allow_any_topic():
    anything = settings(MODELSERVING_ANY_KAFKA_TOPIC="true", MODELSERVING_KAFKA_BOOTSTRAP="k:9092")

    assert OperatorSettings().any_kafka_topic is False
    assert logging_to("team-b.shared").topic_refusal(anything) is None
    assert logged_topic(logging_to("team-b.shared"), anything) == "team-b.shared"


class RecordedEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []

    def __call__(self, body: Any, *, type: str, reason: str, message: str) -> None:
        self.posted.append((type, reason, message))


class NoKafka:
    """A topic keeper that must not be asked: a refused topic is never checked or created."""

    async def ensure(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the topic keeper was asked for {args}")


def test_a_refused_topic_is_never_checked_or_created():
    rec = reconcile.Reconciler(kube=None, settings=SETTINGS, topics=NoKafka(), model_ids=None)
    body = {
        "metadata": {"name": "mnist", "namespace": "team-a", "uid": "u-1"},
        "spec": {
            "model": {"version": 1, "basePath": "s3://m"},
            "logging": {"kafka": {"topic": "team-b.mnist.inference"}},
        },
    }
    spec = ServingSpec.from_body(body)

    state = asyncio.run(reconcile._logging_state(rec, body, spec, True))

    assert (state.ready, state.reason) == (False, TOPIC_REFUSED)
    assert state.message == spec.topic_refusal(SETTINGS)


def test_a_refusal_is_told_once_per_change_though_the_cache_lags(monkeypatch):
    events = RecordedEvents()
    monkeypatch.setattr(reconcile.kopf, "event", events)
    rec = reconcile.Reconciler(kube=None, settings=SETTINGS, topics=NoKafka(), model_ids=None)
    key = ("team-a", "mnist")
    stale = {"metadata": {"name": "mnist", "namespace": "team-a"}}  # no status written yet

    def tell(refused: str | None, serving: dict = stale, on: reconcile.Reconciler = rec) -> None:
        reconcile._tell_refusal(on, serving, key, "LoggingReady", TOPIC_REFUSED, refused)

    tell("refused: a")
    tell("refused: a")  # the cache still shows the serving before our status write
    tell(None)  # fixed
    tell("refused: b")  # refused again, for another reason
    said = {
        "type": "LoggingReady",
        "status": "False",
        "reason": TOPIC_REFUSED,
        "message": "refused: b",
    }
    restarted = reconcile.Reconciler(kube=None, settings=SETTINGS, topics=NoKafka(), model_ids=None)
    tell("refused: b", {**stale, "status": {"conditions": [said]}}, restarted)

    assert events.posted == [
        ("Warning", TOPIC_REFUSED, "refused: a"),
        ("Warning", TOPIC_REFUSED, "refused: b"),
    ]


@pytest.mark.parametrize(
    ("spec", "most"),
    [
        ({"server": {"replicas": 3}}, 3),
        ({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 5}}, 5),
    ],
)
def test_a_spool_claim_several_pods_would_share_is_told_in_degraded(spec, most):
    # A serving the CRD's rule would refuse now, made before the rule: its pods share a claim.
    claimed = serving(logging={"spool": {"claimName": "mnist-spool"}}, **spec)
    refusal = claimed.spool_claim_refusal() or ""
    assert "claimName mnist-spool holds the spool of one pod" in refusal
    assert f"up to {most} pods" in refusal

    *_, degraded = refused_degraded(deployment_conditions(None), refusal, SPOOL_CLAIM_SHARED)
    assert (degraded.status, degraded.reason) == (True, SPOOL_CLAIM_SHARED)
    assert degraded.message == refusal


def test_a_spool_claim_of_one_pod_or_an_emptydir_spool_is_not_refused():
    assert serving(logging={"spool": {"claimName": "c"}}).spool_claim_refusal() is None
    assert serving(server={"replicas": 3}).spool_claim_refusal() is None
