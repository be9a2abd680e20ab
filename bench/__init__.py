"""The benchmarks. `make bench` (bench.run): our sidecar against nginx, KServe's agent and a bare
aiohttp proxy, plus the inference log and the operator at scale, written to docs/benchmarks.md.
For a change, before and after in one run: bench.compare_sidecar, bench.compare_log and
bench.operator_sizes (`make bench-sidecar`, `bench-log`, `bench-operator`)."""
