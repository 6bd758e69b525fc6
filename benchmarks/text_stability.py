"""Does the same study get the same report again? Decode the same studies twice at one batch size and
once at another, per decoder dtype, and count identical texts and identical findings.

    PYTHONPATH=. python benchmarks/text_stability.py --manifest data/iu-phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split test] [--limit 96] [--batch-sizes 32,8]
        [--dtypes auto,float32] [--json text_stability.json]

Greedy decoding has no randomness, but its arithmetic is not the same from call to call: drafted
passes have as many positions as the drafts proposed (and the draft table learns from every report),
and a batch pads its rows to the longest prompt. In bf16 the decoder's sums are rounded coarsely
enough that a different pass shape can turn a near-tie between two tokens the other way; from there
the text differs. The findings come from the fp32 image head and do not move. This counts how often
that happens with the model's default greedy settings (`GenerationSettings.from_recipe`), one
model per dtype, its draft table learning as `radgen generate` and `radgen serve` let it.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from radgen.data.dataset import lateral_inputs
from radgen.data.study import read_manifest
from radgen.generate.decode import GenerationSettings, generation_dataset, load_model, study_batches
from radgen.machine import cpu_summary
from radgen.models.fast import decoder_precision


def decode(model, dataset, batch_size: int, settings: dict) -> list:
    reports = []
    for batch in study_batches(dataset, batch_size):
        reports += model.generate(pixel_values=batch["pixel_values"], contexts=batch.get("contexts"), **lateral_inputs(batch),
                                  **settings)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--model", default="radgen/assets/default_model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--batch-sizes", default="32,8", help="FIRST,OTHER: decode twice at FIRST, once at OTHER")
    parser.add_argument("--dtypes", default="auto,float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    first, other = (int(b) for b in args.batch_sizes.split(","))
    studies = [s for s in read_manifest(args.manifest) if s.split == args.split][: args.limit]
    root = os.path.dirname(os.path.abspath(args.manifest))
    rows = []
    for dtype in args.dtypes.split(","):
        model = load_model(args.model, dtype=dtype)
        # int8 and fp16-weight decoders keep fp32 embeddings and norms: named by their Linears, not their first parameter
        chosen = decoder_precision(model.decoder)
        settings = GenerationSettings.from_recipe(model.recipe, num_beams=1).generate_kwargs()
        dataset = generation_dataset(model, studies, root, "findings")
        runs = {f"batch {first}": decode(model, dataset, first, settings), f"batch {first} again": decode(model, dataset, first, settings),
                f"batch {other}": decode(model, dataset, other, settings)}
        reference = runs[f"batch {first}"]
        for name, reports in list(runs.items())[1:]:
            row = {"dtype": dtype, "decoder_dtype": chosen, "run": name, "against": f"batch {first}", "studies": len(reference),
                   "same_text": sum(a.text == b.text for a, b in zip(reference, reports)),
                   "same_findings": sum(a.findings == b.findings for a, b in zip(reference, reports))}
            rows.append(row)
            print(f"| {dtype} ({chosen}) | {name} | {row['same_text']}/{row['studies']} | {row['same_findings']}/{row['studies']} |", flush=True)
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, {"model": args.model, "split": args.split, "threads": args.threads, "torch": torch.__version__,
                                      "cpu": cpu_summary(),
                                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})


if __name__ == "__main__":
    main()
