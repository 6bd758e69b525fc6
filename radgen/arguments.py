"""argparse helpers the `cli` modules share (kept apart from radgen.cli, which imports every `cli` module)."""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """Lets key=value overrides and --flags mix in any order (`radgen train cfg --size tiny a.b=1`).

    Plain argparse assigns all positionals at the first positional chunk, so overrides placed
    after a flag would be "unrecognized"; `parse_known_intermixed_args` handles that.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def allow_intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make a subcommand's parser accept positionals (dotted overrides) after its options.

    The subparser object is created by `add_parser`; only its parsing changes.
    """
    parser.__class__ = IntermixedParser
    return parser
