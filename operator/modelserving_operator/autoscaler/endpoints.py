"""The endpoints of the servings that may go to zero (spec.autoscaling.minReplicas 0): their
Service has no selector, and the operator writes its EndpointSlice, the serving's ready pods,
or the activator's while none is ready (render/network.render_endpoint_slice).

What the slices are made of: the serving's pods from the watch cache (whose changes reconcile
the serving), and the activator's ready pods (activator_endpoints.py follows them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelserving_operator.render.network import Endpoint


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> tuple[Endpoint, ...]:
    """The ready endpoints of a Service's EndpointSlices (a pod's first address each), in
    address order."""
    found: dict[str, Endpoint] = {}
    for slice_ in slices:
        for endpoint in slice_.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            ref = endpoint.get("targetRef") or {}
            addresses = endpoint.get("addresses") or []
            if addresses:
                address = addresses[0]
                found[address] = Endpoint(address, ref.get("name", ""), ref.get("namespace", ""))
    return tuple(found[address] for address in sorted(found))


def pod_endpoints(namespace: str, pods: Sequence[Mapping[str, Any]]) -> list[Endpoint]:
    """The serving's pods that answer: Ready, with an address, and not going."""
    return [
        Endpoint(pod["ip"], pod["name"], namespace)
        for pod in pods
        if pod["ready"] and pod.get("ip") and not pod.get("deleting")
    ]


@dataclass
class ActivatorEndpoints:
    """The activator's ready pods, as last read."""

    endpoints: tuple[Endpoint, ...] = ()
