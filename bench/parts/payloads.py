"""The benchmark's inference-log payloads, with no import of the project: a revision's tree
(procs.tree_at) imports them beside its own sidecar, whichever layout that revision has."""

from __future__ import annotations

import json

# A ~1 KB record: a request of 64 floats and its predictions, as TF Serving JSON.
REQUEST = json.dumps({"instances": [[round(i * 0.137, 4) for i in range(64)]]}).encode()
RESPONSE = json.dumps({"predictions": [[round(i * 0.291, 4) for i in range(48)]]}).encode()
