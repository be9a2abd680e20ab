"""The side-by-side benchmark (`make bench`): our sidecar against nginx, KServe's agent and a
bare aiohttp proxy, plus the inference log and the operator at scale. See docs/benchmarks.md."""
