"""Generate the Python modules of TF Serving's API (modelserving/tfserving) from its .proto files
with grpcio-tools: `make protos` after changing a .proto file. The generated modules are
committed, so that installing the project needs no protobuf compiler; a unit test regenerates
them and compares (tests/unit/test_tfserving_protos.py).

    python tools/generate_protos.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("modelserving/tfserving")
# Only the file with services gets a _grpc module; the others hold messages alone.
SERVICES = PROTO_DIR / "serving_apis.proto"


def proto_files() -> list[Path]:
    return sorted((ROOT / PROTO_DIR).glob("*.proto"))


def generate(out: Path) -> None:
    """Write the _pb2.py, _pb2.pyi (and the services' _pb2_grpc.py) modules under `out`."""
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    out.mkdir(parents=True, exist_ok=True)
    protos = [str(p.relative_to(ROOT)) for p in proto_files()]
    for args in (
        [f"--python_out={out}", f"--pyi_out={out}", *protos],
        [f"--grpc_python_out={out}", str(SERVICES)],
    ):
        code = protoc.main(["protoc", f"-I{ROOT}", f"-I{include}", *args])
        if code != 0:
            raise SystemExit(f"protoc failed ({code}) on {args}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="where the modules go")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
