"""The operator's and the activator's identities as the chart makes them: the chart's RBAC
objects, ServiceAccount (and the operator's peering object) rendered by the real helm and
applied to the test cluster, and a kubeconfig that carries a token of that ServiceAccount
(TokenRequest), so that an operator or activator run with it has exactly the rights the chart
grants, and a right the chart lacks fails the test."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

from tests.support import REPO

CHART = REPO / "charts" / "modelserving"
# A release named as the chart: its full name is `modelserving`, so the ClusterRoles it binds
# to servings' accounts carry the operator's default names (--sidecar-auth-cluster-role ...).
RELEASE = "modelserving"
# The chart's templates that make the operator's identity and rights (not its Deployment: the
# operator runs as a local process).
TEMPLATES = (
    "templates/serviceaccount.yaml",
    "templates/rbac.yaml",
    "templates/sidecar-auth-clusterrole.yaml",
    "templates/sidecar-log-status-clusterrole.yaml",
    "templates/peering.yaml",
)
TOKEN_DURATION = "6h"  # longer than any test session


def render_operator_account(
    local_env, release_namespace: str, watched: str, values: Sequence[str] = ()
) -> str:
    """The chart's RBAC, ServiceAccount and peering objects for an operator watching one
    namespace, as `helm template` renders them (with `values`, each KEY=VALUE, set)."""
    sets = [arg for value in values for arg in ("--set", value)]
    return _template(
        local_env, release_namespace, TEMPLATES, "--set", f"watchNamespaces={{{watched}}}", *sets
    )


def _template(local_env, release_namespace: str, templates: Sequence[str], *args: str) -> str:
    """`helm template` of the chart's `templates` alone, as released in `release_namespace`."""
    shown = [arg for template in templates for arg in ("--show-only", template)]
    return _run(
        local_env,
        "helm",
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        release_namespace,
        *args,
        *shown,
    )


def operator_kubeconfig(
    local_env,
    release_namespace: str,
    watched: str,
    dest: Path,
    values: Sequence[str] = (),
    server: str | None = None,
) -> Path:
    """Apply the chart's objects for an operator watching `watched` and write a kubeconfig at
    `dest` that reaches the cluster as the chart's ServiceAccount (through the API server of
    the admin kubeconfig `server` when given, a second one of the cluster)."""
    manifests = render_operator_account(local_env, release_namespace, watched, values)
    return _account_kubeconfig(local_env, release_namespace, manifests, dest, server)


# The activator's identity: its ServiceAccount, ClusterRole and binding (not its Deployment
# and Service: the activator runs as a local process).
ACTIVATOR_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")


def activator_kubeconfig(local_env, release_namespace: str, dest: Path) -> Path:
    """Apply the chart's ServiceAccount, ClusterRole and binding of the activator and write a
    kubeconfig at `dest` that reaches the cluster as that ServiceAccount."""
    rendered = _template(local_env, release_namespace, ("templates/activator.yaml",))
    identity = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in ACTIVATOR_KINDS
    ]
    manifests = yaml.safe_dump_all(identity)
    return _account_kubeconfig(local_env, release_namespace, manifests, dest)


def _account_kubeconfig(
    local_env, release_namespace: str, manifests: str, dest: Path, server: str | None = None
) -> Path:
    """Apply `manifests` and write a kubeconfig at `dest` as their ServiceAccount."""
    _run(
        local_env,
        "kubectl",
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=manifests,
    )
    account = next(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(manifests)
        if doc and doc["kind"] == "ServiceAccount"
    )
    token = _run(
        local_env,
        "kubectl",
        "create",
        "token",
        account,
        "-n",
        release_namespace,
        f"--duration={TOKEN_DURATION}",
    ).strip()
    admin = yaml.safe_load(Path(server or local_env.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    user = f"system:serviceaccount:{release_namespace}:{account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    dest.write_text(yaml.safe_dump(config))
    dest.chmod(0o600)
    return dest


def _run(local_env, *cmd: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        cmd, input=stdin, env=local_env.tool_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{' '.join(cmd[:3])}:\n{proc.stderr}"
    return proc.stdout
