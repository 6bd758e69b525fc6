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
    "radgen.machine",  # radgen env: the CPU and what radgen picks on it
    # each stage adds its module here
]


# Optional dependencies (pyproject extras): a missing one gets the install line instead of a traceback.
OPTIONAL_MODULES = {"fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve",
                    "tensorboard": "train", "gguf": "weights", "pycocoevalcap": "metrics"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radgen",
        description="Radiology report generation: data → train → generate → evaluate → explain → serve.",
    )
    parser.add_argument("--version", action="version", version=f"radgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the cores idle right now, at least 1; or $RADGEN_NUM_THREADS)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


# Commands that decode off the main thread (the server's model worker, `generate`'s decoding lanes):
# they put every thread on glibc's main heap before any thread allocates (radgen.allocator says why;
# one report on the main thread, as `radgen demo` decodes, measured no faster that way).
ONE_HEAP_COMMANDS = frozenset({"serve", "generate"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ONE_HEAP_COMMANDS:
        from radgen.allocator import one_heap_for_all_threads

        one_heap_for_all_threads()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not args.verbose:
        from radgen.quiet import quiet_third_party

        quiet_third_party()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from radgen.threads import configure_threads, restore_threads

    try:
        configure_threads(args.threads)
        result = args.func(args)
    except RadgenError as err:
        print(f"radgen: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = OPTIONAL_MODULES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"radgen: error: {err.name} is not installed; it comes with the [{extra}] extra: "
              f"pip install 'radgen[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("radgen: interrupted", file=sys.stderr)
        return 130
    finally:
        restore_threads()  # in-process callers (notebooks, tests) get their thread count back
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
