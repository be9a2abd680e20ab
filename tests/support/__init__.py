"""What the tests share besides fixtures: waiting with a deadline, the repository's scripts, the
TF Serving stand-in, the operator and other processes the tests run. Fixtures are in conftest.py.

Two files here also run as scripts by path (the stand-in and the inference log driver), which
puts this folder first on sys.path: no module here may take a standard library or installed
package's name.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: the checkout the tests run from."""
