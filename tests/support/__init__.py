"""What the tests share besides fixtures: waiting with a deadline, the repository's scripts, the
TF Serving stand-in, the operator and other processes the tests run. Fixtures are in conftest.py.

Two files here also run as scripts by path (the stand-in and the inference log driver), which
puts this folder first on sys.path: no module here may take a standard library or installed
package's name.
"""

from pathlib import Path

from hypothesis import settings

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: the checkout the tests run from."""


def examples(full: int) -> int:
    """A property's count of examples: `full` under Hypothesis' default profile (`make test`,
    what CI runs), and as much less under another as that profile's default count is below
    100 (`make unit`'s "quick" profile, registered in tests/conftest.py: a fifth)."""
    return max(1, full * settings.default.max_examples // 100)
