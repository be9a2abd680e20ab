"""Turn a ModelServing into the manifests of its children, as plain dicts.

Pure functions of the parsed spec (modelserving_operator.spec) and the operator's
settings: no I/O, no kopf; the reconciler applies what `render_children` returns. Each
kind of child is rendered in a module of its own: render_config (the ConfigMaps),
render_pod (the Deployment and its autoscaler), render_network (Service,
NetworkPolicy, Ingress) and render_rbac (the sidecar's account and bindings).
"""

from __future__ import annotations

from collections.abc import Sequence

from modelserving_operator.names import Manifest
from modelserving_operator.render.config_maps import render_configmaps
from modelserving_operator.render.network import (
    render_ingress,
    render_network_policy,
    render_service,
)
from modelserving_operator.render.pods import render_deployment, render_hpa
from modelserving_operator.render.rbac import (
    render_cluster_role_binding,
    render_log_status_role_binding,
    render_service_account,
)
from modelserving_operator.settings import OperatorSettings
from modelserving_operator.spec import ServingSpec


def render_children(
    spec: ServingSpec,
    settings: OperatorSettings,
    model_id: int,
    secrets_checksum: str | None = None,
    previous_buckets: Sequence[int] | None = None,
) -> list[Manifest]:
    """Every child the serving needs, in the order to apply them (configs before pods);
    `secrets_checksum` is the digest of the Secrets and ConfigMaps its pods read at start
    (env_sources), `previous_buckets` the split's bucket table its pods route by now."""
    configmaps = render_configmaps(spec, settings, model_id, previous_buckets)
    # Every sidecar calls the API: it publishes its model report (and its log's health) on its
    # pod, and checks tokens with TokenReviews in auth mode kubernetes.
    children: list[Manifest] = [*configmaps, render_service_account(spec)]
    if spec.auth.mode == "kubernetes":
        children.append(render_cluster_role_binding(spec, settings))
    children.append(render_log_status_role_binding(spec, settings))
    children += [
        render_deployment(spec, settings, configmaps, secrets_checksum),
        render_service(spec),
        render_network_policy(spec),
    ]
    # An Ingress with an annotation the operator refuses is not made at all (one made before
    # goes): without the annotation it could be more open than its author meant.
    if spec.ingress.enabled and spec.ingress_refusal(settings) is None:
        children.append(render_ingress(spec))
    if spec.autoscaling.enabled and not spec.autoscaling.on_concurrency:
        children.append(render_hpa(spec))  # on concurrency the operator scales (autoscaling/)
    return children
