"""The `radgen` command. Thin: parse arguments, call the library, print.

Each stage owns its subcommands in a `cli` module exposing `register(subparsers)`; this file only
collects them, so everything the CLI does is one import away for notebook users.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from radgen import __version__
from radgen.errors import RadgenError

# Modules that add subcommands, in the order `radgen --help` lists them.
COMMAND_MODULES = [
    "radgen.data.cli",
    "radgen.models.cli",  # radgen model info / list
    "radgen.train.cli",
    "radgen.generate.cli",
    "radgen.explain.cli",
    "radgen.metrics.cli",
    "radgen.serve.cli",  # radgen serve, radgen demo
    # each stage adds its module here
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radgen",
        description="Radiology report generation: data → train → generate → evaluate → explain → serve.",
    )
    parser.add_argument("--version", action="version", version=f"radgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        result = args.func(args)
    except RadgenError as err:
        print(f"radgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("radgen: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
