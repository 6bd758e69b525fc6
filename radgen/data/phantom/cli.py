"""`radgen data phantom`: render IU-Phantom images for a manifest or for bare label sets.

    radgen data phantom --manifest data/iu/manifest.jsonl --out data/iu-phantom [--limit N] [--seed 0]
                        [--size 512] [--workers 2]
    radgen data phantom --labels-only labels.jsonl --out data/phantom-test --size 128

The output folder receives images/<study>_{PA,LATERAL}.png and manifest.jsonl (radgen Study
records: the real report sections, split, labels["mesh"], labels["chexpert"], and the per-image
ground truth in meta["phantom"]).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radgen.data.study import read_manifest, write_manifest
from radgen.errors import DataError


def register(data_subparsers) -> argparse.ArgumentParser:
    """Add `phantom` to the `radgen data` subcommand group."""
    parser = data_subparsers.add_parser(
        "phantom",
        help="render synthetic PA + lateral chest radiographs from MeSH labels (IU-Phantom)",
        description="Render synthetic chest radiographs whose findings match each study's MeSH terms.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="input manifest (JSONL of Study records with labels['mesh'])")
    source.add_argument("--labels-only", type=Path, dest="labels_only", help='JSONL of label sets {"id", "mesh": [...]} (no reports)')
    parser.add_argument("--out", type=Path, required=True, help="output folder (images/ and manifest.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="render only the first N studies")
    parser.add_argument("--seed", type=int, default=0, help="run seed; same seed → same bytes (default 0)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument("--split", choices=["train", "val", "test"], default=None, help="render only this split")
    parser.set_defaults(func=run_phantom)
    return parser


def run_phantom(args: argparse.Namespace) -> int:
    from radgen.data.phantom.render import render_studies, studies_from_label_sets, unrenderable_summary

    if args.size < 64:
        raise DataError(f"--size {args.size} is too small; use 64 or more (512 is the default)")
    if args.limit is not None and args.limit < 1:
        raise DataError(f"--limit {args.limit}: give a positive number of studies")
    studies = read_manifest(args.manifest) if args.manifest else studies_from_label_sets(args.labels_only)
    if args.split:
        studies = [s for s in studies if s.split == args.split]
    if args.limit:
        studies = studies[: args.limit]
    if not studies:
        raise DataError(f"{args.manifest or args.labels_only}: no studies to render (check --split/--limit)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rendered = list(render_studies(studies, out, seed=args.seed, size=args.size, workers=args.workers))
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rendered)
    counts = unrenderable_summary(rendered)
    total = sum(counts.values())
    print(f"rendered {len(rendered)} studies ({2 * len(rendered)} images, {args.size}px) → {manifest}")
    if total:
        listing = ", ".join(f"{heading} ({n})" for heading, n in counts.most_common())
        print(f"unrenderable terms: {total} in {sum(1 for s in rendered if s.meta['phantom']['unrenderable'])} studies: {listing}")
    else:
        print("unrenderable terms: 0")
    return 0
