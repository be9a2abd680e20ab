"""The inference log's pipeline as the sidecar runs it, on a spool in a test's folder and with no
broker (the producer keeps retrying an address where nothing listens), and its counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import prometheus_client

from modelserving_sidecar.config import LogDurability, parse_config
from modelserving_sidecar.log.metrics import InferenceLogMetrics
from modelserving_sidecar.log.pipeline import InferenceLogPipeline


def pipeline_for(
    tmp_path: Path, registry: prometheus_client.CollectorRegistry | None = None, **logging: Any
) -> InferenceLogPipeline:
    """A `durability: spooled` pipeline (or as `logging` says) spooling under tmp_path."""
    config = parse_config(
        {
            "serving": {"name": "s", "namespace": "n"},
            "model": {"name": "m", "version": 1, "modelId": 1},
            # No broker listens there: the producer keeps retrying, the spool is what is tested.
            "logging": {
                "mode": "ALL",
                "topic": "t",
                "bootstrapServers": "127.0.0.1:9",
                "spoolDir": str(tmp_path / "spool"),
                "durability": "spooled",
                "drainTimeoutSeconds": 0.2,
                **logging,
            },
        }
    )
    assert config.logging.durability is LogDurability.SPOOLED
    registry = registry or prometheus_client.CollectorRegistry()
    return InferenceLogPipeline(config, InferenceLogMetrics(registry), pod="p")


def count(registry: prometheus_client.CollectorRegistry, name: str, **labels: str) -> float:
    """A counter of the log's, by its name after `modelserving_inference_log_`."""
    return registry.get_sample_value(f"modelserving_inference_log_{name}", labels or None) or 0
