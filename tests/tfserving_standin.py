"""Runs the TF Serving stand-in, now in tests/support/tfserving_standin.py, from its old path:
demo/run.py starts it as `python tests/tfserving_standin.py`. Remove once the demo names the
new path."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(
        str(Path(__file__).parent / "support" / "tfserving_standin.py"), run_name="__main__"
    )
