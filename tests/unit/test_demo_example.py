"""The demo's example holds the hash of the demo key the demo and README publish."""

from __future__ import annotations

from pathlib import Path

import yaml

from modelserving_sidecar.auth.api_keys import hash_api_key
from tests.support import REPO
from tests.support.scripts import load_script

EXAMPLE = REPO / "examples" / "half_plus_two.yaml"
DEMO = REPO / "demo" / "run.py"
DEMO_KEY = "demo-key-half-plus-two"


def test_example_secret_holds_the_demo_keys_hash():
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    secret = next(d for d in docs if d["kind"] == "Secret")
    serving = next(d for d in docs if d["kind"] == "ModelServing")
    assert secret["stringData"] == {"demo": hash_api_key(DEMO_KEY)}
    assert serving["spec"]["auth"]["apiKeys"]["secretName"] == secret["metadata"]["name"]
    assert DEMO_KEY in EXAMPLE.read_text() and DEMO_KEY in DEMO.read_text()


def test_demo_maps_each_mount_path_once_even_under_a_mounted_tmp():
    # A checkout under /tmp puts the pod's local folders under /tmp, which is itself a mount.
    root = Path("/tmp/checkout/.localenv/demo/pod")
    mounts = {
        p: root / p.lstrip("/") for p in ("/tmp", "/etc/modelserving/apikeys", "/var/spool/x")
    }
    text = "apiKeysDir: /etc/modelserving/apikeys\nspoolDir: /var/spool/x\nscratch: /tmp/a\n"
    assert load_script("demo/run.py", "demo_run").localize(text, mounts) == (
        f"apiKeysDir: {root}/etc/modelserving/apikeys\nspoolDir: {root}/var/spool/x\n"
        f"scratch: {root}/tmp/a\n"
    )
