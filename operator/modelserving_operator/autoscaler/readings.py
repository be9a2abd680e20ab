"""What the sidecars report of their load: each serving pod's requests in flight and their
integral over time (request-seconds), read from its sidecar's /metrics, asked for those two
alone; and the serving's concurrency over a round, from two reads of each pod.

The integral's rate between two reads is the time-weighted average of the requests the pod held
in between, every request counted for the time it was held (a count sampled once a round would
miss a burst that came and went between reads). A pod read for the first time, or whose
sidecar started again (the integral went down), counts with what it holds at the read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from modelserving import api
from modelserving_sidecar.metrics import CONCURRENCY_METRICS

IN_FLIGHT, REQUEST_SECONDS = CONCURRENCY_METRICS
PATH = "/metrics?" + "&".join(f"name[]={name}" for name in CONCURRENCY_METRICS)


@dataclass(frozen=True)
class PodRead:
    """One read of a pod's sidecar, at the operator's monotonic time `at`."""

    at: float
    in_flight: float
    request_seconds: float


def parse(text: str) -> tuple[float, float] | None:
    """The in-flight count and the request-seconds in a scrape's text (None: not both there,
    or not both finite counts: a page that says NaN, Inf or a negative count is no reading,
    whatever answered at the pod's address)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in CONCURRENCY_METRICS:
            try:
                number = float(value.split()[0])
            except (ValueError, IndexError):
                return None
            if not math.isfinite(number) or number < 0:
                return None
            found[name] = number
    if len(found) != 2:
        return None
    return found[IN_FLIGHT], found[REQUEST_SECONDS]


def pod_concurrency(before: PodRead | None, now: PodRead) -> float:
    """The requests the pod held on average since `before` (what it holds now, without one)."""
    if before is None or now.request_seconds < before.request_seconds or now.at <= before.at:
        return now.in_flight
    return (now.request_seconds - before.request_seconds) / (now.at - before.at)


def serving_concurrency(before: Mapping[str, PodRead], now: Mapping[str, PodRead]) -> float:
    """The serving's requests in flight over the round: its pods read now, each against its
    read of the round before (pods gone since are not counted: their requests were answered)."""
    return sum(pod_concurrency(before.get(pod), read) for pod, read in now.items())


async def read_pod(
    session: aiohttp.ClientSession, ip: str, at: float, timeout: float
) -> PodRead | None:
    """One read of the sidecar at `ip` (None: it did not answer in `timeout`, or not in kind)."""
    url = f"http://{_host(ip)}:{api.SIDECAR_PORT}{PATH}"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            parsed = parse(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return None
    return None if parsed is None else PodRead(at, *parsed)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
