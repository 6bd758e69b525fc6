"""`radgen model ...`: inspect recipes and models.

    radgen model info RECIPE [--size full|tiny] [--json] [key=value ...]
    radgen model list
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect model recipes (parameter counts, memory)")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    info = sub.add_parser("info", help="parameters per component and stage, memory estimates (meta device, no download)")
    info.add_argument("recipe", help="recipe name (blip2-opt-lora, blip-captioning:decoder-only, ...) or YAML path")
    info.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.peft.r=8")
    info.add_argument("--size", default="full", help="full (default) or a size the recipe defines (tiny)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_info)
    listing = sub.add_parser("list", help="recipes shipped with radgen and their variants")
    listing.set_defaults(func=_list)
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
