"""The Secrets that servings' pods read at start, checked by name every --secret-check-seconds:
one whose version moved marks the servings that read it, and their reconcile rolls their pods
if a value the pods read has changed (secret_refs, reconcile).

Why not a watch: a watch of Secrets needs list and watch of every Secret in the watched
namespaces (of the whole cluster when none is named) and streams every Secret's values to the
operator; these gets by name read only the Secrets servings name, with a right (get) that gives
nothing to whoever would list them. What it costs: a change is seen up to the period late (the
kubelet, too, brings a mounted Secret's change about a minute late), and a get per Secret read,
once per period, however many servings read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from modelserving.operator.kopf_internals import cache_current
from modelserving.operator.kube import KubeError
from modelserving.operator.reconcile import Reconciler
from modelserving.operator.secret_refs import SecretRead

log = logging.getLogger(__name__)

# (namespace, Secret) -> the names of the servings of that namespace whose pods read it.
Readers = Mapping[tuple[str, str], Iterable[str]]


async def check_secrets_forever(rec: Reconciler, readers: Callable[[], Readers]) -> None:
    """Every --secret-check-seconds, `check_secrets`; a failed round is told and the next tried."""
    while True:
        await asyncio.sleep(rec.settings.secret_check_seconds)
        await cache_current()  # a paused standby reads nothing
        try:
            await check_secrets(rec, readers())
        except Exception:  # the next round may fare better; the checks must not end
            log.exception("checking the Secrets that servings read failed")


async def check_secrets(rec: Reconciler, readers: Readers) -> None:
    """Read each Secret that servings read, by name; mark the servings that read one whose
    version is not the one last read (a reconcile, or the last round, read it)."""
    readers = {secret: tuple(servings) for secret, servings in readers.items()}  # as of now
    secrets = sorted(readers)
    found = await asyncio.gather(
        *(rec.kube.get("Secret", name, namespace) for namespace, name in secrets),
        return_exceptions=True,
    )
    for (namespace, name), secret in zip(secrets, found, strict=True):
        if isinstance(secret, KubeError):
            log.warning("reading Secret %s/%s failed: %s", namespace, name, secret)
            continue
        if isinstance(secret, BaseException):
            raise secret
        version = SecretRead.of(secret).version if secret else None
        known = rec.secret_versions.get((namespace, name), version)
        rec.secret_versions[(namespace, name)] = version
        if known != version:
            servings = sorted(set(readers[(namespace, name)]))
            log.info(
                "Secret %s/%s changed: reconciling the servings that read it (%s)",
                namespace, name, ", ".join(servings),
            )  # fmt: skip
            for serving in servings:
                rec.queue.add((namespace, serving), serving_event=False)
    for gone in rec.secret_versions.keys() - set(secrets):  # read by no serving now
        del rec.secret_versions[gone]
