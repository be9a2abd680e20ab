"""The concurrency autoscaler's rounds, on the active operator (kopf peering's leader): every
READ_SECONDS it reads the ready pods of each serving that scales on concurrency (readings.py),
all at once, and writes a Deployment's scale when the pods it wants (decide.py) differ from
those asked for.

What it costs: one small HTTP GET per ready pod per round (two metric families), no API read
(the watch caches hold the servings, their Deployments and pods), and one PATCH of `scale`
per change of a serving's pods, with a Normal Event, as the HorizontalPodAutoscaler makes.
A pod that does not answer in READ_TIMEOUT is left out of the round; a serving none of whose
pods answered keeps its pods (decide: no reading, no change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import kopf

from modelserving import api
from modelserving_operator.autoscaler.decide import Decision, Memory, Policy, Reading, decide
from modelserving_operator.autoscaler.endpoints import pod_endpoints
from modelserving_operator.autoscaler.readings import PodRead, read_pod, serving_concurrency
from modelserving_operator.caches import WatchCaches
from modelserving_operator.kube import KubeClient, KubeError
from modelserving_operator.runtime.kopf_internals import cache_current, event_target
from modelserving_operator.runtime.workqueue import Key
from modelserving_operator.spec import ServingSpec, SpecError

log = logging.getLogger(__name__)

READ_SECONDS = 2.0  # as Knative's autoscaler reads its queue-proxies
READ_TIMEOUT = 1.0
READS_AT_ONCE = 64  # pods read at once: a thousand pods are read in a few batches
SCALED = "Scaled"  # the Event's reason
FIELD_MANAGER = "modelserving-autoscaler"


@dataclass
class Scaling:
    """What the autoscaler keeps of one serving between rounds."""

    policy: Policy
    memory: Memory
    readings: deque[Reading] = field(default_factory=deque)
    pods: dict[str, PodRead] = field(default_factory=dict)  # the last round's reads


@dataclass
class Autoscaler:
    kube: KubeClient
    caches: WatchCaches
    scalings: dict[Key, Scaling] = field(default_factory=dict)
    _specs: dict[Key, tuple[str | None, ServingSpec | None]] = field(default_factory=dict)
    _replicas_seen: dict[Key, tuple[str | None, int]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    async def forever(self) -> None:
        """A round every READ_SECONDS; a failed round is told and the next tried."""
        try:
            while True:
                await asyncio.sleep(READ_SECONDS)
                await cache_current()  # a paused standby reads and writes nothing
                try:
                    await self.round(time.monotonic())
                except Exception:  # the next round may fare better; scaling must not end
                    log.exception("a round of the concurrency autoscaler failed")
        finally:
            if self._session is not None:
                await self._session.close()

    async def round(self, now: float) -> None:
        servings = dict(self._on_concurrency())
        for gone in self.scalings.keys() - servings.keys():
            del self.scalings[gone]
            self._replicas_seen.pop(gone, None)
        ready = {key: self._ready_pods(key) for key in servings}
        reads = await self._read(now, ready)
        for key, spec in servings.items():
            policy = Policy.of(spec.autoscaling)
            scaling = self.scalings.get(key)
            if scaling is None or scaling.policy != policy:
                scaling = self.scalings[key] = Scaling(policy, Memory.first(now))
            try:
                await self._scale(key, scaling, now, len(ready[key]), reads.get(key, {}))
            except Exception:  # one serving's failure must not stop the others' scaling
                log.exception("scaling %s/%s failed", *key)

    async def _scale(
        self, key: Key, scaling: Scaling, now: float, ready: int, reads: dict[str, PodRead]
    ) -> None:
        if reads:
            concurrency = serving_concurrency(scaling.pods, reads)
            scaling.readings.append(Reading(now, concurrency))
        scaling.pods = reads
        while scaling.readings and scaling.readings[0].at <= now - scaling.policy.stable_seconds:
            scaling.readings.popleft()
        current = self._replicas(key)
        if current is None:
            return  # no Deployment yet: the reconcile makes it
        decision = decide(scaling.policy, scaling.readings, now, ready, current, scaling.memory)
        scaling.memory = decision.memory
        if decision.replicas != current:
            await self._write(key, current, decision)

    async def _write(self, key: Key, current: int, decision: Decision) -> None:
        namespace, name = key
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        try:
            await self.kube.request(
                "PATCH",
                path,
                body={"spec": {"replicas": decision.replicas}},
                # The replica count's owner, as managedFields say it: not the operator's apply.
                params={"fieldManager": FIELD_MANAGER},
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            log.warning("scaling %s/%s to %d failed: %s", namespace, name, decision.replicas, exc)
            return
        message = f"{current} to {decision.replicas} replicas: {decision.why}"
        log.info("%s/%s scaled from %s", namespace, name, message)
        serving = self.caches.serving(key)
        if serving is not None:
            ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": serving["metadata"]}
            kopf.event(event_target(ref), type="Normal", reason=SCALED, message=f"From {message}")

    def _on_concurrency(self) -> Iterator[tuple[Key, ServingSpec]]:
        """The servings that scale on concurrency (each parsed again only when it changed)."""
        seen: set[Key] = set()
        for key, cached in self.caches.cached_servings():
            seen.add(key)
            version, spec = self._specs.get(key, ("", None))
            if version != cached.resource_version:
                try:
                    spec = ServingSpec.from_body(cached.parsed())
                except SpecError:
                    spec = None  # its reconcile says what is wrong
                self._specs[key] = (cached.resource_version, spec)
            if spec is not None and spec.autoscaling.on_concurrency:
                yield key, spec
        for gone in self._specs.keys() - seen:
            del self._specs[gone]

    def _ready_pods(self, key: Key) -> list[tuple[str, str]]:
        """(name, address) of the serving's pods that answer."""
        return [(e.pod, e.address) for e in pod_endpoints(key[0], self.caches.pods(key))]

    def _replicas(self, key: Key) -> int | None:
        """The replicas the serving's Deployment asks for (None: it has none yet)."""
        for child in self.caches.children(key):
            if child.kind == "Deployment":
                version, replicas = self._replicas_seen.get(key, ("", 0))
                if version != child.resource_version:  # parsed again only when it changed
                    replicas = child.parsed()["spec"].get("replicas", 1)
                    self._replicas_seen[key] = (child.resource_version, replicas)
                return replicas
        return None

    async def _read(
        self, now: float, pods: Mapping[Key, list[tuple[str, str]]]
    ) -> dict[Key, dict[str, PodRead]]:
        """Read every ready pod, READS_AT_ONCE at a time; the pods that answered, by serving."""
        if self._session is None:
            # Its own connections, kept from round to round: a new one per read would cost a
            # TCP handshake per pod every 2 s.
            connector = aiohttp.TCPConnector(limit=READS_AT_ONCE)
            self._session = aiohttp.ClientSession(connector=connector)
        session = self._session
        targets = [(key, name, ip) for key, ready in pods.items() for name, ip in ready]
        answers = await asyncio.gather(
            *(read_pod(session, ip, now, READ_TIMEOUT) for _, _, ip in targets)
        )
        reads: dict[Key, dict[str, PodRead]] = {}
        for (key, name, _), read in zip(targets, answers, strict=True):
            if read is not None:
                reads.setdefault(key, {})[name] = read
        return reads
