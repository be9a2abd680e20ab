"""What every part of the benchmark runs on: processes pinned to cores and measured, the local
environment, the tools built or installed, load generation, Kafka topics and the arithmetic."""
