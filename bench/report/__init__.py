"""The report of `make bench`: bench/results.json read into typed results (results.py), drawn as
docs/benchmarks.md (page.py, one module a section: targets, request_path, grpc, failures,
inference_log, operator, profile; cells.py for how a figure is written) and its latency SVG
(plot.py)."""
