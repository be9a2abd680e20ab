"""The Helm chart against the real API server: it lints, renders objects the server
accepts, refuses bad values by name, installs (CRDs established, operator Ready on
KWOK), upgrades by rolling the Deployment, uninstalls cleanly, and grants the
operator's ServiceAccount what the operator uses and nothing more."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from tests.support import REPO
from tests.support.waiting import wait_for

CHART = REPO / "charts" / "modelserving"
INSTANCE = "app.kubernetes.io/instance"
CRDS = ("modelservings.modelserving.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


def helm(local_env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["helm", *args], env=local_env.tool_env(), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


@pytest.fixture
def release(local_env, namespace) -> Iterator[str]:
    """A release name of this test's own; uninstalled afterwards whatever happened."""
    name = f"ms-{uuid.uuid4().hex[:6]}"
    yield name
    helm(local_env, "uninstall", name, "-n", namespace, "--wait", check=False)


def install(local_env, release: str, namespace: str, *values: str) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    helm(
        local_env,
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        *sets,
        "--wait",
        "--timeout",
        "120s",
    )


def crd_established(kube_client, name: str) -> bool:
    crd = client.ApiextensionsV1Api(kube_client).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_chart_lints_strictly(local_env):
    helm(local_env, "lint", "--strict", str(CHART))
    helm(local_env, "lint", "--strict", str(CHART), "--set", "watchNamespaces={a,b}")


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["watchNamespaces={NS}", "replicaCount=2", "peering.name=team-peering"],
        ["peering.enabled=false", "rbac.aggregateToDefaultRoles=false", "sidecarAuth.create=false"],
    ],
    ids=["defaults", "watched-namespace-ha", "standalone-minimal"],
)
def test_rendered_chart_is_accepted_by_the_api_server(local_env, namespace, values):
    # The CRDs are real (peering objects need them); the rest is a server-side dry run.
    applied = local_env.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-test",
        "-f",
        str(CHART / "crds"),
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    sets = [arg for v in values for arg in ("--set", v.replace("NS", namespace))]
    rendered = helm(local_env, "template", "dry", str(CHART), "-n", namespace, *sets).stdout
    proc = subprocess.run(
        ["kubectl", "apply", "--server-side", "--dry-run=server", "-f", "-"],
        input=rendered,
        env=local_env.tool_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/dry-modelserving serverside-applied (server dry run)" in proc.stdout


def test_without_read_secrets_the_operator_is_granted_nothing_on_secrets_and_told_so(local_env):
    def render(*values: str) -> list[dict]:
        sets = [arg for value in values for arg in ("--set", value)]
        out = helm(local_env, "template", "ms", str(CHART), *sets).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def secrets_verbs(docs: list[dict]) -> set[str]:
        return {
            verb
            for doc in docs
            if doc["kind"] in ("ClusterRole", "Role")
            for r in doc.get("rules") or []
            if "secrets" in r.get("resources", [])
            for verb in r["verbs"]
        }

    def read_secrets_setting(docs: list[dict]) -> str:
        (deployment,) = [
            doc
            for doc in docs
            if doc["kind"] == "Deployment"
            and doc["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        ]
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return next(e["value"] for e in env if e["name"] == "MODELSERVING_READ_SECRETS")

    default = render()
    assert secrets_verbs(default) == {"get"}  # by name: never listed nor watched
    assert read_secrets_setting(default) == "true"
    forbidden = render("rbac.readSecrets=false")
    assert secrets_verbs(forbidden) == set()
    assert read_secrets_setting(forbidden) == "false"
    # The CA's ConfigMap stays readable: the topic admin can still use a CA held there
    cluster_role = next(
        d
        for d in forbidden
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ms-modelserving"
    )
    assert {"resources": ["configmaps"], "verbs": ["get"], "apiGroups": [""]} in (
        cluster_role["rules"]
    )


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("logLevel=LOUD", "/logLevel"),
        ("replicaCount=0", "/replicaCount"),
        ("kafka.bootstrapServers=kafka", "/kafka/bootstrapServers"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("livenessPort=70000", "/livenessPort"),
        ("replicas=2", "'replicas' not allowed"),
        ("tfserving.image.tag=", "/tfserving/image/tag"),
    ],
)
def test_bad_values_are_refused_naming_the_value(local_env, namespace, release, value, named):
    proc = helm(
        local_env, "install", release, str(CHART), "-n", namespace, "--set", value, check=False
    )
    assert proc.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert named in proc.stderr, proc.stderr


def test_install_upgrade_uninstall(local_env, kube_client, namespace, release):
    apps = client.AppsV1Api(kube_client)
    fullname = f"{release}-modelserving"

    # Given the chart installed with a Kafka default and two replicas
    install(local_env, release, namespace, "kafka.bootstrapServers=kafka:9092", "replicaCount=2")

    # Then the CRDs are established and the operator Deployment is Ready
    for crd in CRDS:
        assert wait_for(lambda crd=crd: crd_established(kube_client, crd), 30, f"{crd} Established")
    deployment = apps.read_namespaced_deployment(fullname, namespace)
    assert deployment.status.ready_replicas == 2
    pod_spec = deployment.spec.template.spec
    env = {e.name: e.value for e in pod_spec.containers[0].env}
    assert env["MODELSERVING_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["MODELSERVING_SIDECAR_AUTH_CLUSTER_ROLE"] == f"{fullname}-sidecar-auth"
    assert env["MODELSERVING_PEERING"] == fullname
    # The activator: two replicas behind the Service the operator points servings at zero at.
    activator = f"{fullname}-activator"
    assert env["MODELSERVING_ACTIVATOR_SERVICE"] == f"{namespace}/{activator}"
    assert wait_for(
        lambda: apps.read_namespaced_deployment(activator, namespace).status.ready_replicas == 2,
        60,
        "the activator's two replicas",
    )
    activator_spec = apps.read_namespaced_deployment(activator, namespace).spec.template.spec
    assert activator_spec.containers[0].args[0] == "activator"
    assert activator_spec.service_account_name == activator
    app_version = yaml.safe_load(helm(local_env, "show", "chart", str(CHART)).stdout)["appVersion"]
    assert pod_spec.containers[0].image == f"localhost/modelserving:{app_version}"
    assert pod_spec.security_context.run_as_non_root is True
    assert pod_spec.containers[0].security_context.read_only_root_filesystem is True
    peering = local_env.kubectl("get", "clusterkopfpeering", fullname, "-o", "name")
    assert peering.stdout.strip() == f"clusterkopfpeering.kopf.dev/{fullname}"

    # When the log level changes
    before = deployment.metadata.generation
    helm(
        local_env,
        "upgrade",
        release,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "logLevel=DEBUG",
        "--wait",
        "--timeout",
        "120s",
    )

    # Then the Deployment rolls: a new generation, all replicas updated and ready with it
    def rolled() -> bool:
        d = apps.read_namespaced_deployment(fullname, namespace)
        return (
            d.metadata.generation > before
            and d.status.observed_generation == d.metadata.generation
            and d.status.updated_replicas == 2
            and d.status.ready_replicas == 2
            and (d.status.replicas or 0) == 2
        )

    assert wait_for(rolled, 60, "the upgraded Deployment rolled out")
    deployment = apps.read_namespaced_deployment(fullname, namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MODELSERVING_LOG_LEVEL"] == "DEBUG"
    pods = client.CoreV1Api(kube_client).list_namespaced_pod(
        namespace, label_selector=f"{INSTANCE}={release},app.kubernetes.io/component=operator"
    )
    assert len({p.metadata.labels["pod-template-hash"] for p in pods.items}) == 1

    # When the release is uninstalled
    helm(local_env, "uninstall", release, "-n", namespace, "--wait")

    # Then none of its objects remain, namespaced or cluster-wide; the CRDs stay
    selector = f"{INSTANCE}={release}"
    kinds = "deployments,serviceaccounts,roles,rolebindings,poddisruptionbudgets,configmaps"
    cluster_kinds = "clusterroles,clusterrolebindings,clusterkopfpeerings"

    def leftovers() -> list[str]:
        namespaced = local_env.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name")
        cluster = local_env.kubectl("get", cluster_kinds, "-l", selector, "-o", "name")
        return (namespaced.stdout + cluster.stdout).split()

    assert wait_for(lambda: not leftovers(), 30, "no objects of the release"), leftovers()
    assert all(crd_established(kube_client, crd) for crd in CRDS)


def access_review(kube_client, user: str, attrs: dict) -> bool:
    review = client.AuthorizationV1Api(kube_client).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=["system:serviceaccounts", "system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(**attrs),
            )
        )
    )
    return review.status.allowed


def rule(verb: str, resource: str, group: str = "", namespace: str | None = None, **extra) -> dict:
    return {"verb": verb, "resource": resource, "group": group, "namespace": namespace, **extra}


def operator_needs(ns: str, release_ns: str, sidecar_auth: str) -> list[dict]:
    """What the operator does (operator/modelserving_operator/kube.py, handlers.py, modelids.py
    and kopf)."""
    crd = "modelservings.modelserving.io"  # whose annotation is the modelId counter
    return [
        rule("list", "modelservings", "modelserving.io", ns),
        rule("watch", "modelservings", "modelserving.io", ns),
        rule("get", "modelservings", "modelserving.io", ns),
        rule("patch", "modelservings", "modelserving.io", ns),
        rule("patch", "modelservings", "modelserving.io", ns, subresource="status"),
        *[
            rule(verb, resource, group, ns)
            for resource, group in [
                ("configmaps", ""),
                ("services", ""),
                ("serviceaccounts", ""),
                ("rolebindings", "rbac.authorization.k8s.io"),
                ("deployments", "apps"),
                ("networkpolicies", "networking.k8s.io"),
                ("ingresses", "networking.k8s.io"),
                ("horizontalpodautoscalers", "autoscaling"),
            ]
            for verb in ("get", "list", "watch", "create", "patch", "delete")
        ],
        rule("create", "events", "", ns),
        # The Secrets and CA ConfigMap a serving's spec.logging.kafka.security names, one by one,
        # for the topic admin's connection to a secured Kafka; the Secrets its pods read, by name.
        rule("get", "secrets", "", ns),
        rule("get", "configmaps", "", ns),
        rule("list", "pods", "", ns),
        rule("watch", "pods", "", ns),
        rule("list", "customresourcedefinitions", "apiextensions.k8s.io"),
        rule("watch", "customresourcedefinitions", "apiextensions.k8s.io"),
        *[
            rule(verb, "clusterrolebindings", "rbac.authorization.k8s.io")
            for verb in ("get", "list", "watch", "create", "patch", "delete")
        ],
        rule("bind", "clusterroles", "rbac.authorization.k8s.io", name=sidecar_auth),
        rule(
            "bind",
            "clusterroles",
            "rbac.authorization.k8s.io",
            name=sidecar_auth.removesuffix("-auth") + "-log-status",
        ),
        rule("get", "configmaps", "", release_ns, name="modelserving-model-ids"),
        rule("get", "customresourcedefinitions", "apiextensions.k8s.io", name=crd),
        rule("patch", "customresourcedefinitions", "apiextensions.k8s.io", name=crd),
    ]


def operator_must_not(ns: str, release_ns: str) -> list[dict]:
    return [
        # Secrets are read by name: a stolen token cannot list or watch them all.
        rule("list", "secrets", "", ns),
        rule("watch", "secrets", "", ns),
        rule("create", "secrets", "", ns),
        rule("patch", "secrets", "", ns),
        rule("delete", "secrets", "", release_ns),
        rule("create", "pods", "", ns),
        rule("create", "pods", "", ns, subresource="exec"),
        rule("delete", "namespaces"),
        rule("update", "deployments", "apps", ns),
        rule("delete", "modelservings", "modelserving.io", ns),
        rule("create", "modelservings", "modelserving.io", ns),
        rule("update", "configmaps", "", ns, name="some-other-configmap"),
        rule("bind", "clusterroles", "rbac.authorization.k8s.io", name="cluster-admin"),
        rule("escalate", "clusterroles", "rbac.authorization.k8s.io"),
        rule("create", "clusterroles", "rbac.authorization.k8s.io"),
        rule("patch", "pods", "", ns),
        rule("patch", "pods", "", ns, subresource="status"),
        rule("create", "tokenreviews", "authentication.k8s.io"),
        rule("patch", "customresourcedefinitions", "apiextensions.k8s.io"),
        rule(
            "patch",
            "customresourcedefinitions",
            "apiextensions.k8s.io",
            name="kopfpeerings.kopf.dev",
        ),
        rule(
            "delete",
            "customresourcedefinitions",
            "apiextensions.k8s.io",
            name="modelservings.modelserving.io",
        ),
        rule("update", "configmaps", "", release_ns, name="modelserving-model-ids"),
        rule("impersonate", "serviceaccounts", "", ns),
        rule("patch", "nodes"),
    ]


def check_access(kube_client, user: str, allowed: list[dict], refused: list[dict]) -> None:
    wrongly_refused = [a for a in allowed if not access_review(kube_client, user, a)]
    wrongly_allowed = [a for a in refused if access_review(kube_client, user, a)]
    assert (wrongly_refused, wrongly_allowed) == ([], [])


def test_operator_account_may_do_what_the_operator_needs_and_nothing_more(
    local_env, kube_client, namespace, release
):
    install(local_env, release, namespace)
    fullname = f"{release}-modelserving"
    user = f"system:serviceaccount:{namespace}:{fullname}"
    sidecar_auth = f"{fullname}-sidecar-auth"
    other_ns = "default"  # any namespace: all are watched
    allowed = [
        *operator_needs(other_ns, namespace, sidecar_auth),
        rule("patch", "clusterkopfpeerings", "kopf.dev"),
        rule("watch", "clusterkopfpeerings", "kopf.dev"),
    ]
    refused = operator_must_not(other_ns, namespace)
    # RBAC caches settle within moments of the install.
    wait_for(lambda: access_review(kube_client, user, allowed[0]), 10, "the operator's binding")
    check_access(kube_client, user, allowed, refused)

    # The sidecar-auth ClusterRole grants exactly the sidecar's two reviews.
    role = client.RbacAuthorizationV1Api(kube_client).read_cluster_role(sidecar_auth)
    assert sorted((r.api_groups[0], r.resources[0], tuple(r.verbs)) for r in role.rules) == [
        ("authentication.k8s.io", "tokenreviews", ("create",)),
        ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
    ]


def test_watched_namespaces_bound_the_operator_to_them(local_env, kube_client, namespace, release):
    core = client.CoreV1Api(kube_client)
    watched = f"{namespace}-w"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=watched)))
    try:
        install(local_env, release, namespace, f"watchNamespaces={{{watched}}}")
        fullname = f"{release}-modelserving"
        user = f"system:serviceaccount:{namespace}:{fullname}"
        allowed = [
            *operator_needs(watched, namespace, f"{fullname}-sidecar-auth"),
            rule("patch", "kopfpeerings", "kopf.dev", watched),
            rule("list", "namespaces"),
        ]
        # Outside the watched namespace: none of the namespaced rights.
        refused = [
            *operator_must_not(watched, namespace),
            rule("list", "modelservings", "modelserving.io", "default"),
            rule("patch", "deployments", "apps", "default"),
            rule("create", "events", "", "default"),
            rule("list", "secrets", "", "default"),
            rule("patch", "clusterkopfpeerings", "kopf.dev"),
        ]
        wait_for(lambda: access_review(kube_client, user, allowed[0]), 10, "the RoleBinding")
        check_access(kube_client, user, allowed, refused)
        peering = local_env.kubectl("get", "kopfpeering", "-n", watched, "-o", "json")
        names = [p["metadata"]["name"] for p in json.loads(peering.stdout)["items"]]
        assert names == [fullname]
    finally:
        helm(local_env, "uninstall", release, "-n", namespace, "--wait", check=False)
        core.delete_namespace(watched)
