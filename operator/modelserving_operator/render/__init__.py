"""Turn a ModelServing into the manifests of its children, as plain dicts: pure functions."""
