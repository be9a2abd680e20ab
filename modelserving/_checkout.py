"""In a checkout, `modelserving.operator` and `modelserving.sidecar` are the top-level folders
`operator/` and `sidecar/` (pyproject's package-dir; a wheel, and so the image, holds them inside
this package). setuptools' editable install maps a folder to a package only when it has an
`__init__.py`, and `operator/` must not have one: a regular package named `operator` would stand
in for the standard library's module in anything run with `python -m` from the repo root (runpy
itself imports it). So a checkout's folders are mapped here, by name, for these two packages only.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SUBPACKAGES = ("operator", "sidecar")


class CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds `modelserving.<name>` in the checkout's top-level folder `<name>/`."""

    def __init__(self, root: Path) -> None:
        self.folders = {f"{__package__}.{name}": root / name for name in SUBPACKAGES}

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        init = folder / "__init__.py"
        if init.is_file():
            return importlib.util.spec_from_file_location(
                fullname, init, submodule_search_locations=[str(folder)]
            )
        spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]  # a namespace package, as operator/ is
        return spec


def map_checkout_folders() -> None:
    """Install the finder when this package runs from a checkout (once per process)."""
    package = Path(__file__).parent
    root = package.parent
    if (package / "sidecar").exists() or not (root / "pyproject.toml").is_file():
        return  # an installed wheel: the subpackages are inside this package
    if not any(isinstance(finder, CheckoutFolders) for finder in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFolders(root))
