"""The sidecar's config (what the operator renders as sidecar.yaml) as a test writes it: a
serving with no auth and no gRPC port behind the test's upstream, and what the test changes,
merged in section by section."""

from __future__ import annotations

from typing import Any

Sections = dict[str, dict[str, Any]]


def sidecar_config(upstream: str, /, **sections: dict[str, Any]) -> Sections:
    """The config of a sidecar of model half_plus_two (version 1, modelId 17) of serving
    demo/hpt, forwarding to `upstream`; each of `sections` is merged into its section."""
    base: Sections = {
        "serving": {"name": "hpt", "namespace": "demo"},
        "model": {"name": "half_plus_two", "version": 1, "modelId": 17},
        "upstream": {"url": upstream},
        "auth": {"mode": "none"},
        "grpc": {"port": 0},  # TF Serving's 8500 is not a test's to take
    }
    return with_sections(base, **sections)


def with_sections(config: Sections, /, **sections: dict[str, Any]) -> Sections:
    """`config` with each of `sections` merged into its section (a key given wins)."""
    merged = dict(config)
    for section, values in sections.items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged
