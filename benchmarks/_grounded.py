"""Command-line options shared by the benchmarks that score a grounded model's findings on a manifest."""

from __future__ import annotations

import argparse


def grounded_parser(description: str, split: str) -> argparse.ArgumentParser:
    """--model, --data, --split (default `split`), --limit, --batch-size, --bootstrap, --json."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="radgen-small")
    parser.add_argument("--data", required=True, help="manifest with train/val/test splits and labels.chexpert")
    parser.add_argument("--split", default=split)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", default=None)
    return parser
