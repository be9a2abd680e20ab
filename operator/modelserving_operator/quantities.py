"""Kubernetes quantities (1Gi, 500M) as numbers, for the sizes a spec gives."""

from __future__ import annotations

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "": 1,
}


def quantity_bytes(quantity: str | int) -> int:
    """Bytes of a Kubernetes quantity such as 1Gi or 500M."""
    text = str(quantity).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _SUFFIXES[suffix])
    return int(float(text))
