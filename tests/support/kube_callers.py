"""Callers as the cluster knows them, for the sidecar's stories with `auth.mode: kubernetes`: a
ServiceAccount's token for an audience (TokenRequest), a Role and RoleBinding that grant it
predict on the test's serving, and a sidecar run in the test's own process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from kubernetes import client

from modelserving.api import GROUP, PLURAL, PREDICT_SUBRESOURCE
from modelserving_sidecar.app import create_app
from modelserving_sidecar.config import SidecarConfig
from modelserving_sidecar.main import serving

SERVING = "hpt"  # the serving these stories' sidecars say they are, and the grant names
AUDIENCE = "modelserving-test"


@asynccontextmanager
async def sidecar(config: SidecarConfig) -> AsyncIterator[tuple[web.Application, str]]:
    """The sidecar app of `config` served on a free port of this process: (app, url)."""
    app = create_app(config)
    async with serving(app) as url:
        yield app, url


def service_account_token(
    kube_client: client.ApiClient, namespace: str, name: str, audience: str
) -> str:
    """A token of the ServiceAccount `name` (made when missing) for `audience`."""
    core = client.CoreV1Api(kube_client)
    if name not in {
        sa.metadata.name for sa in core.list_namespaced_service_account(namespace).items
    }:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=3600)
    )
    return core.create_namespaced_service_account_token(name, namespace, request).status.token


def grant_predict(kube_client: client.ApiClient, namespace: str, service_account: str) -> None:
    """A Role granting predict on SERVING, bound to the ServiceAccount."""
    rbac = client.RbacAuthorizationV1Api(kube_client)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="predict"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[GROUP],
                    resources=[f"{PLURAL}/{PREDICT_SUBRESOURCE}"],
                    resource_names=[SERVING],
                    verbs=["create"],
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="predict"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="predict"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount", name=service_account, namespace=namespace
                )
            ],
        ),
    )
