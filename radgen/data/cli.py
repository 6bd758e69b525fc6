"""`radgen data ...`: build manifests from datasets and describe them.

    radgen data prepare --format iu-xray-kaggle --root DIR --out manifest.jsonl [--split-ratio 0.8,0.1,0.1 --seed 0]
                        [--resplit 0.8,0.1,0.1]   (ignore the dataset's split: random, by subject)
                        [--views PA,AP] [--section findings] [--require-images]
    radgen data stats manifest.jsonl [--out-dir DIR]

Other areas add `data` subcommands by listing a module in `DATA_SUBCOMMAND_MODULES`; its
`register(data_subparsers)` is called with this group's subparsers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from pathlib import Path

from radgen.errors import DataError

# Modules whose register(data_subparsers) adds more `radgen data` subcommands.
DATA_SUBCOMMAND_MODULES: list[str] = [
    "radgen.data.phantom.cli",  # radgen data phantom
]


def _prepare(args: argparse.Namespace) -> int:
    from radgen.data.adapters import prepare
    from radgen.data.adapters.common import relativize_paths
    from radgen.data.study import write_manifest

    if Path(args.out).is_dir():
        raise DataError(f"--out {args.out} is a folder; give the manifest file to write, e.g. {Path(args.out) / 'manifest.jsonl'}")
    result = prepare(
        args.format, args.root, views=args.views, section=args.section, split_ratio=args.split_ratio,
        seed=args.seed, require_images=args.require_images, resplit=args.resplit,
    )
    for line in result.report_lines():
        print(f"radgen: {line}", file=sys.stderr)
    if not result.studies:
        raise DataError(f"{args.root}: no studies left after filtering (see the counts above); nothing written to {args.out}")
    out = Path(args.out)
    relativize_paths(result.studies, out.parent)
    write_manifest(out, result.studies)
    splits = Counter(study.split for study in result.studies)
    text_only = sum(1 for study in result.studies if not study.images)
    print(
        f"wrote {len(result.studies)} studies to {out} ("
        + ", ".join(f"{name} {splits[name]}" for name in ("train", "val", "test") if splits[name])
        + f"; {sum(len(s.images) for s in result.studies)} images; {text_only} text-only"
        + f"; {sum(result.skipped.values())} skipped)"
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from radgen.data.stats import compute_stats, format_stats, plot_stats
    from radgen.data.study import read_manifest
    from radgen.io import atomic_write_json, atomic_write_text

    studies = read_manifest(args.manifest)
    stats = compute_stats(studies)
    text = format_stats(stats, title=str(args.manifest))
    print(text, end="")
    if args.out_dir:
        out_dir = Path(args.out_dir)
        atomic_write_text(out_dir / "stats.txt", text)
        atomic_write_json(out_dir / "stats.json", stats)
        plot_stats(stats, out_dir / "stats.png", title=Path(args.manifest).name)
        print(f"wrote {out_dir / 'stats.txt'}, stats.json and stats.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from radgen.data.adapters import FORMATS

    data = subparsers.add_parser("data", help="build and inspect dataset manifests", description="Build and inspect dataset manifests.")
    data_subparsers = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])

    prepare = data_subparsers.add_parser(
        "prepare", help="convert a dataset folder into a manifest (JSONL)",
        description="Convert a dataset into a radgen manifest. Every dropped study is counted by reason.",
    )
    prepare.add_argument("--format", required=True, choices=list(FORMATS), help="dataset layout")
    prepare.add_argument("--root", required=True, help="dataset folder (for --format manifest: a .csv/.jsonl file or a folder)")
    prepare.add_argument("--out", required=True, help="manifest to write (JSONL; written atomically)")
    prepare.add_argument("--split-ratio", default=None, help="train,val,test fractions for studies the dataset gives no split (default 0.8,0.1,0.1)")
    prepare.add_argument("--resplit", default=None, metavar="RATIO",
                         help="ignore the dataset's split; split every kept study at random by train,val,test fractions, e.g. 0.8,0.1,0.1 "
                              "(grouped by subject, else by study; --seed picks the draw)")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the split assignment (default 0)")
    prepare.add_argument("--views", default=None, help="keep only images of these views, e.g. PA,AP (default: all)")
    prepare.add_argument("--section", default=None, choices=["findings", "impression", "both"], help="drop studies where this section is empty (default: keep studies with any findings or impression)")
    prepare.add_argument("--require-images", action="store_true", help="drop studies with no existing image file (default: keep them as text-only studies)")
    prepare.set_defaults(func=_prepare)

    stats = data_subparsers.add_parser("stats", help="counts per split/view, report lengths, label frequencies")
    stats.add_argument("manifest", help="manifest JSONL")
    stats.add_argument("--out-dir", default=None, help="also write stats.txt, stats.json and stats.png here")
    stats.set_defaults(func=_stats)

    for module_name in DATA_SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(data_subparsers)
