"""Before and after a change, side by side in one run: the sidecar's request path
(compare_sidecar), the inference log (compare_log), the operator at chosen sizes
(operator_sizes)."""
