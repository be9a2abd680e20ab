"""What the inference log's policy costs the request path, per request: sampling, redaction,
cutting and digesting payloads, each timed in this process (best of 5 rounds of 2,000 calls,
one core). Prints a table.

    python -m bench.parts.log_policy_cost
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from modelserving_sidecar.log.policy import (
    LogPolicy,
    OversizePolicy,
    Part,
    RedactAction,
    RedactRule,
)

# Two instances with personal fields, ~230 bytes; and eight MNIST images, ~32 KB.
SMALL = {
    "signature_name": "serving_default",
    "instances": [
        {"email": "ada@example.com", "ssn": "123-45-6789", "x": [1.0, 2.0]},
        {"email": "bob@example.com", "ssn": "987-65-4321", "x": [3.0, 4.0]},
    ],
}
BIG = {"instances": [[0.5] * 784] * 8}


def per_call_us(fn: Callable[[], object], rounds: int = 5, n: int = 2000) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def figures() -> dict[str, float]:
    """Microseconds per request of each policy step."""
    rid = str(uuid.uuid4())
    body, big = json.dumps(SMALL).encode(), json.dumps(BIG).encode()
    everything = LogPolicy(success_rate=1.0)
    sampled = LogPolicy(success_rate=0.1)
    redacting = LogPolicy(
        rules=(RedactRule("instances[*].email"), RedactRule("instances[*].ssn", RedactAction.HASH))
    )
    big_redacting = LogPolicy(rules=(RedactRule("instances[*]", RedactAction.DROP),))
    cutting = LogPolicy(max_payload_bytes=4096)
    digesting = LogPolicy(max_payload_bytes=4096, oversize=OversizePolicy.DIGEST)
    plain = LogPolicy()
    return {
        "sampling, rate 1 (no hash)": per_call_us(lambda: everything.sampled(rid, 200)),
        "sampling, rate 0.1 (BLAKE2b of the id)": per_call_us(lambda: sampled.sampled(rid, 200)),
        "payload as it came, 230 B": per_call_us(lambda: plain.shape(body, Part.REQUEST)),
        "redaction, 2 rules, 230 B": per_call_us(lambda: redacting.shape(body, Part.REQUEST)),
        "redaction, 1 rule, 32 KB": per_call_us(lambda: big_redacting.shape(big, Part.REQUEST)),
        "payload as it came, 32 KB": per_call_us(lambda: plain.shape(big, Part.REQUEST)),
        "cut 32 KB to 4 KB": per_call_us(lambda: cutting.shape(big, Part.REQUEST)),
        "digest of 32 KB": per_call_us(lambda: digesting.shape(big, Part.REQUEST)),
    }


def main() -> None:
    print("inference log policy, µs per request:")
    for name, us in figures().items():
        print(f"  {name:42s} {us:8.2f}")


if __name__ == "__main__":
    main()
