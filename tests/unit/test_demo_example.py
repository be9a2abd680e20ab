"""The demo's example holds the hash of the demo key the demo and README publish."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelserving.sidecar.apikeys import hash_api_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "half_plus_two.yaml"
DEMO_KEY = "demo-key-half-plus-two"


def test_example_secret_holds_the_demo_keys_hash():
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")
    serving = next(d for d in docs if d["kind"] == "ModelServing")
    assert secret["stringData"] == {"demo": hash_api_key(DEMO_KEY)}
    assert serving["spec"]["auth"]["apiKeys"]["secretName"] == secret["metadata"]["name"]
    assert (
        DEMO_KEY in EXAMPLE.read_text()
        and DEMO_KEY in (EXAMPLE.parents[1] / "demo" / "run.py").read_text()
    )
