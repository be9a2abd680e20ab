"""The benchmarks. `make bench` (bench.run): our sidecar against nginx, KServe's agent and a bare
aiohttp proxy, plus the inference log and the operator at scale, written to docs/benchmarks.md.
For a change, before and after in one run: bench.comparisons (`make bench-sidecar`,
`bench-log`, `bench-operator`).

    harness/      processes pinned to cores, the local environment, tool builds, load, stats
    parts/        what is measured: the sidecar, the request and gRPC paths, the log, the operator
    baselines/    what it is measured against: nginx, KServe's agent, bare proxies, gRPC upstream
    comparisons/  before and after a change, in one run
    report/       the typed results of bench/results.json and docs/benchmarks.md drawn from them
"""

from pathlib import Path

# The repository's root: where bench/results.json, docs/ and localenv/ are (the working tree's,
# also for a process started in another revision's tree, where bench/ is a link to this one).
REPO = Path(__file__).resolve().parent.parent
