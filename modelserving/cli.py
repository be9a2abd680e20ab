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
    "operator": ("modelserving_operator.main", "run the operator that reconciles ModelServings"),
    "sidecar": ("modelserving_sidecar.main", "run the sidecar of a serving pod"),
    "activator": (
        "modelserving_sidecar.activator.main",
        "hold the requests of servings at zero, wake them and forward",
    ),
    "apikey": (
        "modelserving_sidecar.auth.apikey_cli",
        "make an API key and the Secret with its hash",
    ),
    "logs": ("modelserving.inferencelog.cli", "read a serving's inference log from Kafka"),
}
# A subcommand's own subcommands: (name, word) -> (module, one-line help). The word is one only
# right after the name (`modelserving logs export TOPIC`), so that `logs TOPIC` still reads a
# topic of any name (`modelserving logs --from-beginning export` reads one named export).
NESTED: dict[tuple[str, str], tuple[str, str]] = {
    ("logs", "export"): (
        "modelserving.inferencelog.export_cli",
        "write a time range of the inference log to a file (JSON lines or Parquet)",
    ),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelserving",
        description="ModelServing: an operator and sidecar for authenticated, logged TF Serving.",
    )
    parser.add_argument("--version", action="version", version=f"modelserving {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    chosen = argv[at] if at is not None else None
    word = argv[at + 1] if at is not None and at + 1 < len(argv) else ""
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue
        if (name, word) in NESTED:
            nested_module, nested_help = NESTED[name, word]
            nested = sub_parser.add_subparsers(dest="subcommand", required=True, metavar=word)
            nested_parser = nested.add_parser(word, help=nested_help, description=nested_help)
            importlib.import_module(nested_module).configure_parser(nested_parser)
        else:
            importlib.import_module(module).configure_parser(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(argv).parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command starts: no traceback for that
        return 130
    subcommand = getattr(args, "subcommand", None)
    if subcommand is not None:
        module_name = NESTED[args.command, subcommand][0]
    else:
        module_name = SUBCOMMANDS[args.command][0]
    return importlib.import_module(module_name).run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
