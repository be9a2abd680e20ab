"""The demo, end to end, as a newcomer runs it: `make demo` (here `python demo/run.py`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.support import REPO

# A lifecycle story: `pytest -m "not slow"` leaves it out; `make test` runs it.
pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_system(local_env):
    proc = subprocess.run(
        [sys.executable, str(REPO / "demo" / "run.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"demo failed:\n{out[-4000:]}\n{proc.stderr[-4000:]}"

    # Every step ran, in order.
    steps = re.findall(r"^\[(\d)/9\]", out, re.M)
    assert steps == [str(n) for n in range(1, 10)]
    # kubectl get modelservings shows the serving Ready, all its traffic on version 1, its one
    # replica ready, and its endpoint.
    assert re.search(
        r"half-plus-two\s+half_plus_two\s+1:100\s+True\s+Available\s+1/1\s+"
        r"http://half-plus-two\.demo\.svc:8080/v1/models/half_plus_two:predict",
        out,
    )
    # The seed's request got half_plus_two's answer; without a key, a 401 in TF Serving's words.
    assert 'answer:   200 {"predictions": [2.5, 3.0, 4.5]}' in out
    # And the same over gRPC, through the sidecar's gRPC port to the stand-in's.
    assert "answer:   OK y = [2.5, 3.0, 4.5]" in out
    assert re.search(r'answer:   401 \{"error": ".*"\}\s+\(WWW-Authenticate: ApiKey', out)
    # The decoded Avro record is the request's and its answer's.
    record = json.loads(out[out.index("{\n") : out.index("\n}\n") + 2])
    request_id = re.search(r"X-Request-Id ([-0-9a-f]+)", out).group(1)
    assert record["key"] == request_id
    assert record["modelName"] == "half_plus_two"
    assert record["responseHttpCode"] == 200
    assert json.loads(record["inferenceRequest"])["instances"] == [1.0, 2.0, 5.0]
    assert json.loads(record["inferenceResponse"]) == {"predictions": [2.5, 3.0, 4.5]}
    assert record["headers"]["caller"] == "demo"
    assert "make demo-down" in out
