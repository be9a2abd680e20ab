"""Which model version answers a request: the canonical path, the weighted split, the shadow."""
