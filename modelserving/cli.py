"""The `modelserving` command: one entry point, a subcommand per part.

Each subcommand lives in its own module, which provides
`configure_parser(parser)` and `run(args) -> int`; modules are imported only
when their subcommand runs, so `--help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from modelserving import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("modelserving.operator.main", "run the operator that reconciles ModelServings"),
    "sidecar": ("modelserving.sidecar.main", "run the sidecar of a serving pod"),
    "apikey": ("modelserving.sidecar.apikey_cli", "make an API key and the Secret with its hash"),
    "logs": ("modelserving.inferencelog_cli", "read a serving's inference log from Kafka"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserving",
        description="ModelServing: an operator and sidecar for authenticated, logged TF Serving.",
    )
    parser.add_argument("--version", action="version", version=f"modelserving {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure_parser(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return module.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
