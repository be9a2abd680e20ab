"""The repository's standalone scripts (localenv, the image build, the demo), loaded as
modules so that tests can call their functions."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support import REPO


def load_script(relative_path: str, name: str) -> ModuleType:
    """Import the script at REPO/relative_path under `name` (once; later calls reuse it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_bench(name: str) -> ModuleType:
    """bench/ is a folder of scripts, not an installed package: its module `name` (dotted, as
    "harness.stats"), loaded by path with the folder as the package `bench`."""
    if "bench" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench",
            REPO / "bench" / "__init__.py",
            submodule_search_locations=[str(REPO / "bench")],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench"] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"bench.{name}")
