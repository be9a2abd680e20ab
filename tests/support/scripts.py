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
