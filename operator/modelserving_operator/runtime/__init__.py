"""The operator's runtime under kopf: the controller (work queue, workers, timers), the cached
objects, peering, kopf's internals."""
