"""How replicas of the operator take turns (kopf peering): the oldest running replica is the
active one, the others wait on standby until it stops or stops renewing its entry.

kopf makes active the replica of the highest priority and freezes all replicas that share
the highest one, so replicas of one Deployment, alike in everything, need priorities that
differ. A replica's priority is the negated time it started, in microseconds: the oldest
wins, so a replica that restarts (a new pod after a kill, a rolling upgrade) comes back as a
standby and never takes over from one that is working.
"""

from __future__ import annotations

# kopf renews a replica's entry 5 to 10 s before its lifetime ends; a shorter lifetime would
# renew it every second.
MIN_LIFETIME_SECONDS = 10


def peering_priority(started_at: float) -> int:
    """The priority of a replica started at `started_at` (seconds since the epoch)."""
    return -int(started_at * 1_000_000)
