"""The operator's runtime under kopf: the work queue, the cached objects, peering,
kopf's internals."""
