"""Each serving's modelId: a stable integer, unique in the cluster (the Avro modelId).

Ids come from one counter per cluster, an annotation of the ModelServing CRD itself
(`modelserving.io/next-model-id`), taken with optimistic concurrency (the resourceVersion),
so two operator replicas never hand out the same id; the id is then written in the serving's
status (status.modelId), with the rest of its first status: no write of its own. Why the CRD:
it is the one object every operator install reaches whatever namespaces it watches or runs in
(two installs with disjoint --namespace sets share it), and it lives exactly as long as the
ids it counts mean anything: deleting it deletes every serving. A ConfigMap of the operator's
namespace, where the counter lived before, is lost with that namespace (a restore that leaves
it out, a reinstall elsewhere) while the servings and their ids stay; it is still read once,
when the CRD holds no counter yet, so that an upgrade never hands out an id issued before it.
Its cost: the operator may patch that one CRD (the chart's README says what a stolen token
could do with it).

A counter can still be lost or go back (the CRD replaced, or restored from an older backup),
so the first id of every block taken is also above every id the operator sees in use (the
servings' status.modelId, kopf's index of them). An operator that watches some namespaces
sees only theirs; the CRD's counter is what keeps it apart from the others.

An id is the serving's when the operator has said so where no one else writes: the serving's
status (the status subresource, which the users' roles do not grant and which a create or a
copy never sets), or, until the status is written, this process's own record of the ids it
handed out, by the serving's uid. Anything else gets a fresh id. (Operators before this one
also wrote the id in a `modelserving.io/model-id` annotation of the serving, a write of its
own per serving: it is neither read nor written any more, so one copied with a manifest, or
written by hand, names nothing.) The cost: an operator that stops between taking a new
serving's id and writing its status (a moment in its first reconcile) gives it another id on
its next start, as it would any copy.

A status can still hold another serving's id: one restored from a backup with its status, or
one issued twice before this check (a counter lost). Of the servings whose status holds one
id, the one created first keeps it (creationTimestamp, then uid: an order every operator and
every restart agrees on, and the one that has logged under the id longest, since a restored
copy is created anew); every other gets a fresh id at its next reconcile. The inference log's
records of that id before then may name either; from then on, one model only.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from modelserving import api
from modelserving_operator.kube import KubeClient, KubeError

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
COUNTER_ANNOTATION = f"{api.GROUP}/next-model-id"  # on the CRD: the next id to hand out
# Where the counter was before: a ConfigMap of the operator's namespace, read, never written.
LEGACY_COUNTER_CONFIGMAP = "modelserving-model-ids"
LEGACY_COUNTER_KEY = "next"
ATTEMPTS = 50
MAX_BLOCK = 100  # ids taken of the counter in one write

ServingKey = tuple[str, str]


def status_model_id(serving: Mapping[str, Any]) -> int | None:
    """The modelId the serving's status holds (only the operator writes it), if any."""
    status_id = (serving.get("status") or {}).get("modelId")
    if isinstance(status_id, int) and not isinstance(status_id, bool):
        return status_id
    return None


def model_id_claim(serving: Mapping[str, Any]) -> dict[int, dict[str, str]]:
    """The serving's entry in the index of ids by holder: {its status's modelId: who it is and
    when it was made}, or nothing while its status holds none."""
    model_id = status_model_id(serving)
    if model_id is None:
        return {}
    meta = serving["metadata"]
    return {
        model_id: {
            "uid": meta.get("uid", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "created": meta.get("creationTimestamp", ""),
        }
    }


def _seniority(claim: Mapping[str, str]) -> tuple[str, str]:
    # RFC 3339 timestamps of the API server (UTC, whole seconds) sort as text.
    return (claim.get("created", ""), claim.get("uid", ""))


def keeps_model_id(serving: Mapping[str, Any], others: Iterable[Mapping[str, str]]) -> bool:
    """Whether the serving keeps the id its status holds, though `others` (the claims of
    other servings) hold it too: it does when it was created before each of them."""
    mine = _seniority(next(iter(model_id_claim(serving).values()), {}))
    return all(mine < _seniority(other) for other in others)


def first_id(stored_next: int | None, in_use: Iterable[int]) -> int:
    """The first id of a block: the counter's, and above every id in use (a counter lost, or
    restored from before ids it had handed out, is raised past them)."""
    return max(stored_next or 1, max(in_use, default=0) + 1)


async def _legacy_next(kube: KubeClient, namespace: str) -> int | None:
    """The counter ConfigMap of the operator's namespace, where an older operator kept it."""
    try:
        counter = await kube.get("ConfigMap", LEGACY_COUNTER_CONFIGMAP, namespace)
    except KubeError as exc:
        if exc.status != 403:  # a chart that no longer grants it: nothing to carry over
            raise
        return None
    stored = ((counter or {}).get("data") or {}).get(LEGACY_COUNTER_KEY, "")
    return int(stored) if stored.isdigit() else None


async def take_ids(
    kube: KubeClient, legacy_namespace: str, count: int = 1, in_use: Iterable[int] = ()
) -> int:
    """Take `count` consecutive ids from the cluster's counter (the CRD's annotation), above
    every id `in_use`, returning the first; a concurrent taker (another replica, another
    install) makes us retry, never share."""
    in_use = list(in_use)
    for _ in range(ATTEMPTS):
        crd = await kube.get("CustomResourceDefinition", CRD_NAME)
        if crd is None:
            raise KubeError(404, f"the CRD {CRD_NAME} is not installed")
        stored = (crd["metadata"].get("annotations") or {}).get(COUNTER_ANNOTATION, "")
        stored_next = (
            int(stored) if stored.isdigit() else await _legacy_next(kube, legacy_namespace)
        )
        first = first_id(stored_next, in_use)
        patch = {
            "metadata": {
                # 409 if someone took ids meanwhile
                "resourceVersion": crd["metadata"]["resourceVersion"],
                "annotations": {COUNTER_ANNOTATION: str(first + count)},
            }
        }
        try:
            await kube.merge_patch("CustomResourceDefinition", CRD_NAME, None, patch)
            return first
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise KubeError(409, f"the modelId counter on the CRD {CRD_NAME} stayed contended")


class ModelIds:
    """Hands out ids to the servings that need one, from blocks taken of the counter: the
    servings that need one at the same moment (a thousand applied at once) share one counter
    write, instead of each racing the others for it. `pending` says how many servings are known
    to need an id (those the watch cache holds without one): a block covers them, not only the
    few whose reconciles wait for an id right now. Ids of a block not handed out when the
    operator stops are never used: ids stay unique, with gaps.

    `holders` gives the claims (model_id_claim) of the servings whose status holds an id,
    `in_use` every such id, and `remark` marks a serving for a reconcile of its own (one that
    must give up an id another was first to hold)."""

    def __init__(
        self,
        kube: KubeClient,
        legacy_namespace: str,
        pending: Callable[[], int] = lambda: 0,
        *,
        holders: Callable[[int], Iterable[Mapping[str, str]]] = lambda _: (),
        in_use: Callable[[], Iterable[int]] = tuple,
        remark: Callable[[ServingKey], None] = lambda _: None,
    ) -> None:
        self._kube, self._legacy_namespace = kube, legacy_namespace
        self._pending = pending
        self._holders, self._in_use, self._remark = holders, in_use, remark
        self._lock = asyncio.Lock()
        self._free: collections.deque[int] = collections.deque()
        self._waiting = 0
        # The ids handed out, by the serving's uid, until its status holds its id: until the
        # status is written (its children are made first, or a status write fails), or while
        # the watch cache shows the serving as it was before (or with a status that still
        # holds the id it gave up).
        self._issued: dict[str, int] = {}

    def recorded(self, serving: Mapping[str, Any]) -> int | None:
        """The id the operator issued to the serving, or None: it needs one (none issued, or
        its status holds an id another serving was first to hold)."""
        uid = serving["metadata"].get("uid", "")
        status_id = status_model_id(serving)
        if (issued := self._issued.get(uid)) is not None:
            if status_id == issued:
                del self._issued[uid]  # the status holds it
            return issued
        if status_id is None:
            return None
        others = [c for c in self._holders(status_id) if c.get("uid") != uid]
        if not keeps_model_id(serving, others):
            return None
        for other in others:  # each gives it up at its next reconcile
            self._remark((other["namespace"], other["name"]))
        return status_id

    async def take(self, uid: str) -> int:
        """A fresh id for the serving of this uid, recorded as issued to it."""
        self._waiting += 1
        try:
            async with self._lock:
                if not self._free:
                    count = min(max(self._waiting, self._pending()), MAX_BLOCK)
                    first = await take_ids(
                        self._kube, self._legacy_namespace, count, self._in_use()
                    )
                    self._free.extend(range(first, first + count))
                self._issued[uid] = model_id = self._free.popleft()
                return model_id
        finally:
            self._waiting -= 1
