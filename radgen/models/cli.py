"""`radgen model ...`: inspect recipes and models.

    radgen model info RECIPE [--size full|tiny] [--json] [key=value ...]
    radgen model list
    radgen model export NAME|DIR|RUN --out DIR [--base-weights] [--card card.json]
    radgen model export RECIPE --untrained --out DIR [--size tiny] [--seed 0] [key=value ...]
    radgen model memory DIR --data MANIFEST [--split train]
"""

from __future__ import annotations

import argparse
import json

from radgen.arguments import allow_intermixed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect model recipes (parameter counts, memory)")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    info = allow_intermixed(sub.add_parser("info", help="parameters per component and stage, memory estimates (meta device, no download)"))
    info.add_argument("recipe", help="recipe name (blip2-opt-lora, blip-captioning:decoder-only, ...) or YAML path")
    info.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.peft.r=8")
    info.add_argument("--size", default="full", help="full (default) or a size the recipe defines (tiny)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_info)
    listing = sub.add_parser("list", help="recipes shipped with radgen and their variants")
    listing.set_defaults(func=_list)
    export = allow_intermixed(sub.add_parser("export", help="copy a trained model (or a run's best/) into a small shippable folder; "
                                                            "--untrained: a recipe's model before training (zero-shot)"))
    export.add_argument("source", metavar="SOURCE",
                        help="a shipped model name (radgen-small), a save_pretrained folder or a training run folder (its best/ "
                             "is used); with --untrained a recipe")
    export.add_argument("overrides", nargs="*", help="with --untrained: dotted recipe overrides, e.g. model.decoder.load_in_8bit=false")
    export.add_argument("--untrained", action="store_true",
                        help="build SOURCE as a recipe exactly as training would start it (pretrained sources, fresh connector and "
                             "adapters; LoRA starts as a no-op) and save it, so `radgen generate --model DIR` gives its zero-shot reports")
    export.add_argument("--size", default="full", help="with --untrained: full (default) or a size the recipe defines (tiny)")
    export.add_argument("--seed", type=int, default=0, help="with --untrained: seed of the freshly initialised weights (default 0)")
    export.add_argument("--out", required=True, help="destination folder (replaced atomically)")
    export.add_argument("--base-weights", action="store_true",
                        help="also store the pretrained base weights (default: only trained weights; the base is reloaded from its source)")
    export.add_argument("--card", default=None, help="JSON file with the model card (trained_on, intended_use, limitations, ...); "
                                                     "default: the source folder's model_card.json, if any (README.md is always written)")
    export.set_defaults(func=_export)
    memory = sub.add_parser("memory", help="store a split's reports, keyed by indication, in a model folder for retrieval-guided "
                                           "decoding (generate.guide_margin)")
    memory.add_argument("model_dir", metavar="DIR", help="a save_pretrained folder (e.g. what `radgen model export` wrote)")
    memory.add_argument("--data", required=True, help="manifest whose reports to store (they ship with the model: mind their licence)")
    memory.add_argument("--split", default="train", help="split to store (default train; never the split you evaluate on)")
    memory.set_defaults(func=_memory)
    calibrate = sub.add_parser("calibrate-int8", help="record the decoder's activation ranges on training studies, so "
                                                      "`--dtype int8` smooths before quantizing (radgen.models.int8)")
    calibrate.add_argument("model_dir", metavar="DIR", help="a save_pretrained folder; the ranges are written into it")
    calibrate.add_argument("--data", required=True, help="manifest with images (e.g. `radgen data phantom` output)")
    calibrate.add_argument("--split", default="train", help="split to calibrate on (default train; never the split you evaluate on)")
    calibrate.add_argument("--limit", type=int, default=32, help="studies to decode (default 32)")
    calibrate.add_argument("--root", default=None, help="image root of the manifest (default: its folder)")
    calibrate.set_defaults(func=_calibrate_int8)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _info(args: argparse.Namespace) -> int:
    from radgen.config import load_recipe
    from radgen.models.info import format_info, model_info

    recipe = load_recipe(args.recipe, overrides=args.overrides, size=args.size)
    info = model_info(recipe)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _list(args: argparse.Namespace) -> int:
    import yaml

    from radgen.config import RECIPE_DIR, recipe_names

    for name in recipe_names():
        raw = yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())
        variants = ", ".join(raw.get("variants") or {}) or "-"
        print(f"{name:<22} variants: {variants:<36} {raw.get('description', '')[:70]}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from radgen.errors import DataError
    from radgen.generate.decode import load_model
    from radgen.pipeline import resolve_model

    card = None
    if args.card:
        try:
            card = json.loads(Path(args.card).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{args.card}: cannot read the model card ({err}); give a JSON object file") from None
        if not isinstance(card, dict):
            raise DataError(f"{args.card}: the model card must be a JSON object ({{\"trained_on\": ..., ...}}), not {type(card).__name__}")
    if not args.untrained and (args.overrides or args.size != "full"):
        raise DataError("recipe overrides and --size only apply with --untrained (exporting a saved model keeps its recipe)")
    if args.untrained:
        model = _untrained(args)
        card = card or {"trained_on": f"nothing: recipe {model.recipe.name} as built before training (zero-shot)",
                        "intended_use": "zero-shot baseline for evaluation; not for clinical use"}
    else:
        # As stored, not load_model's inference form: that merges LoRA (a base_weights=False folder is
        # small because adapters stay separate), picks bf16 on a CPU with native bf16 (the export wrote
        # bf16 adapters) and folds the encoder's batch norms (their weights would be missing).
        model = load_model(resolve_model(args.source), prepare=False)
    if card is not None:
        model.card = card  # else the source's own card (read by from_pretrained) travels with it
    model.save_pretrained(args.out, base_weights=args.base_weights)
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(f"exported {args.source} → {args.out} ({size / 1e6:.1f} MB{', with base weights' if args.base_weights else ''})")
    return 0


def _memory(args: argparse.Namespace) -> int:
    from radgen.data.study import read_manifest
    from radgen.generate.decode import resolve_model_dir, select_studies
    from radgen.models.memory import memory_from_studies
    from radgen.models.persist import read_recipe

    directory = resolve_model_dir(args.model_dir)
    memory = memory_from_studies(select_studies(read_manifest(args.data), args.split), read_recipe(directory))
    path = memory.save(directory)
    print(f"stored {len(memory)} {args.split!r} reports of {args.data} in {path}; they are copied into every folder this model "
          f"is exported to (delete the file to ship the model without them)")
    return 0


def _calibrate_int8(args: argparse.Namespace) -> int:
    import os

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, resolve_model_dir, select_studies
    from radgen.models.int8 import record_activation_ranges, save_activation_ranges

    directory = resolve_model_dir(args.model_dir)
    model = load_model(directory, prepare=False)  # plain nn.Linear layers, fp32: what the hooks read
    model.merge_adapters()  # int8 quantizes the merged decoder
    studies = select_studies(read_manifest(args.data), args.split, args.limit)
    root = args.root or os.path.dirname(os.path.abspath(args.data))
    # the recipe's greedy decoding, as `radgen generate --greedy` runs it: the activations int8 will see
    ranges = record_activation_ranges(model.decoder, lambda: generate_reports(model, studies, root, num_beams=1, batch_size=16))
    path = save_activation_ranges(ranges, directory)
    print(f"recorded the decoder's activation ranges on {len(studies)} {args.split!r} studies of {args.data} → {path}")
    return 0


def _untrained(args: argparse.Namespace):
    import torch

    from radgen.config import load_recipe
    from radgen.models import build_model

    recipe = load_recipe(args.source, overrides=args.overrides, size=args.size)
    torch.manual_seed(args.seed)  # the fresh connector / adapter / random-tower weights are reproducible
    return build_model(recipe)
