"""`radgen explain`: per-sentence heatmaps, attention share per layer, grounding on IU-Phantom."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from radgen.generate.cli import add_model_arguments

    parser = subparsers.add_parser(
        "explain", help="heatmaps of where each generated sentence looks; attention share; grounding on IU-Phantom",
        description="For each study: generate a report (or read it from --pred), write one heatmap PNG per sentence over "
                    "the radiograph, the share of attention on the visual tokens per decoder layer, and with --grounding "
                    "(IU-Phantom manifests) the pointing game, hallucination and laterality error rates.")
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--pred", default=None, help="explain these predictions (JSONL from `radgen generate`) instead of generating")
    parser.add_argument("--section", default="findings", choices=["findings", "impression"])
    parser.add_argument("--grounding", action="store_true", help="write grounding.json (needs IU-Phantom studies)")
    parser.add_argument("--tolerance", type=int, default=0, help="pointing game: pixels of slack around a box (paper: 15)")
    parser.add_argument("--per-word", action="store_true", help="also one PNG per generated word (attention methods)")
    parser.add_argument("--gradient", action="store_true", help="use gradient x input even where attention maps exist")
    parser.add_argument("--num-beams", type=int, default=None, help="decoding when generating (default: recipe)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4, help="studies per forward pass (attention maps are large)")
    parser.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from radgen.explain.pipeline import explain_studies
    from radgen.generate.cli import load_inputs
    from radgen.io import read_jsonl

    predictions = {str(row.get("study_id")): row for row in read_jsonl(args.pred)} if args.pred else None
    model, studies, root = load_inputs(args, only_ids=set(predictions) if predictions is not None else None)
    summary = explain_studies(model, studies, args.out, root=root, section=args.section, predictions=predictions,
                              with_grounding=args.grounding, per_word=args.per_word, force_gradient=args.gradient,
                              tolerance=args.tolerance, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size)
    line = f"explain: {summary['studies']} studies, method {', '.join(summary['methods']) or '-'} → {args.out}"
    if summary.get("grounding"):
        g = summary["grounding"]
        line += (f"; pointing {g['pointing_game']['accuracy']}, hallucination {g['hallucination']['rate']}, "
                 f"laterality error {g['laterality']['rate']}")
    print(line)
    return 0
