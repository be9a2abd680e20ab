"""A serving's status from what the operator and the pods observed: pure functions."""
