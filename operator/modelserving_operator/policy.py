"""What the operator's settings let a serving ask for beyond itself: pure checks, no I/O.

A serving's author writes its spec; the team that runs the operator decides what the spec may
reach outside the serving: the Ingress controller's configuration, which serves every
namespace (spec.ingress.annotations, --ingress-allowed-annotations), and the Kafka topics of
other namespaces' servings (spec.logging.kafka.topic, --any-kafka-topic). A refusal is a sentence
that names what is refused and the setting, and the chart's value, that would allow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from modelserving_operator.status.conditions import Condition

# Degraded's reason while the spec's Ingress is refused.
INGRESS_REFUSED = "IngressRefused"
# A serving whose pods would share one spool claim: made before the CRD's rule refused it.
SPOOL_CLAIM_SHARED = "SpoolClaimShared"
# LoggingReady's reason while the spec's topic is refused.
TOPIC_REFUSED = "TopicRefused"


def annotation_allowed(key: str, globs: Iterable[str]) -> bool:
    """Whether `key` matches a glob of `globs` and no "!" glob: a refusal wins, wherever it
    stands in the list."""
    globs = tuple(globs)
    allowed = any(fnmatchcase(key, glob) for glob in globs if not glob.startswith("!"))
    return allowed and not any(fnmatchcase(key, glob[1:]) for glob in globs if glob[:1] == "!")


def ingress_refusal(annotations: Mapping[str, str], globs: Iterable[str]) -> str | None:
    """Why the Ingress of a spec with these annotations is not made, or None when it may be."""
    globs = tuple(globs)
    refused = sorted(key for key in annotations if not annotation_allowed(key, globs))
    if not refused:
        return None
    keys = ", ".join(refused)
    allowed = ", ".join(globs) or "none"
    return (
        f"the Ingress is not made: spec.ingress.annotations {keys} "
        f"{'is' if len(refused) == 1 else 'are'} not allowed by the operator's "
        f"--ingress-allowed-annotations (the chart's servingPolicy.ingressAllowedAnnotations), "
        f"which allows {allowed}; remove {'it' if len(refused) == 1 else 'them'} from the spec, "
        "or ask the operator's admins to allow it"
    )


def topic_refusal(namespace: str, topic: str | None, any_topic: bool) -> str | None:
    """Why the topic a spec names (None: none, the default) is not logged to, or None when it
    may be: unless the operator allows any topic, a named one starts with the serving's
    namespace and a dot. Namespace names hold no dot, so one namespace's prefix is never
    another's. The default topic, NAMESPACE.NAME.inference, has the prefix."""
    prefix = f"{namespace}."
    if topic is None or any_topic or topic.startswith(prefix):
        return None
    return (
        f"nothing is logged: spec.logging.kafka.topic {topic} does not start with the "
        f"serving's namespace and a dot ({prefix}), and a serving may write to, and have the "
        "operator create, only its own namespace's topics (the operator's --any-kafka-topic, "
        f"the chart's servingPolicy.anyKafkaTopic, is off); name it {prefix}..., or leave it "
        f"out for {prefix}NAME.inference"
    )


def refused_degraded(
    conditions: list[Condition], message: str, reason: str = INGRESS_REFUSED
) -> list[Condition]:
    """Degraded says what the operator refuses (an Ingress, a shared spool claim), unless it
    already tells a fault (a refused write, a stuck rollout): that one is the more urgent, and
    the refusal is still told by its Event."""
    return [
        Condition("Degraded", True, reason, message) if c.type == "Degraded" and not c.status else c
        for c in conditions
    ]


def spool_claim_refusal(claim_name: str | None, most_replicas: int) -> str | None:
    """Why a spool claim cannot work as the serving asks: more than one pod would mount it, and
    every sidecar but the one holding the spool's lock fails to start. The CRD refuses such a
    serving; one made before that rule is told by this. None when it works."""
    if claim_name is None or most_replicas <= 1:
        return None
    return (
        f"spec.logging.spool.claimName {claim_name} holds the spool of one pod, and the serving "
        f"asks for up to {most_replicas} pods: the sidecars of all but one cannot start. Set "
        "spec.server.replicas to 1 and spec.autoscaling.enabled to false, or leave claimName "
        "out (each pod's spool is then an emptyDir)"
    )
