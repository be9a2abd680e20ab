"""What the benchmark measures, one module a part: the sidecar, the REST and gRPC request
paths, the inference log's throughput, a sidecar killed mid-load, the operator at scale.
No import here: a revision's tree (harness.procs.tree_at) imports parts.payloads alone."""
