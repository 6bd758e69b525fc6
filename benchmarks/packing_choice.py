"""Which of the decoder's Linears should be packed for oneDNN on this CPU? Every choice, side by side, in one process.

    PYTHONPATH=. python benchmarks/packing_choice.py --manifest work/default-model/phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split val] [--limit 32] [--batch-sizes 1,32] [--rounds 4]
        [--threads 2] [--dtype float32] [--json packing_choice.json]

`prepare_for_inference` packs the decoder's block Linears and its LM head each where a timing at
load says it pays (`radgen.models.fast.packing_pays`). This times the default decoding (drafted
greedy, the model's settings, as `benchmarks/drafted_decoding.py` runs it) with each fixed choice:

- `none`: nothing packed (`RADGEN_PACK_LINEARS=0`);
- `head`: only the LM head packed;
- `blocks`: only the block Linears (attention projections, MLPs) packed;
- `all`: both (`RADGEN_PACK_LINEARS=1`);
- `probe`: what the load-time timing picks in this process (reported as `probe_choice`).

Before the arms, the load-time timing itself runs `--probe-repeats` more times, uncached, on the
shipped decoder's block shape and LM head shape (`probe_timings`: packed/plain per shape): how
close to its 0.95 threshold each decision is, and so how often it can flip from load to load.
`--batch-sizes ""` runs only that.

Each arm is its own copy of the model (as `load_model` prepares it, with the decision fixed) with its own draft table (seeded from the model's
draft_reports.txt, reset for every batch size); the arms take turns over `--rounds` slices of the
batches in a rotating order, so a VM that drifts moves every arm alike. In fp32 packing changes
only the summation order, so `identical_to_none` should be (nearly) every report.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drafted_decoding import combine, count_passes, greedy_settings, rotating_rounds, run, study_parser  # noqa: E402

from radgen.machine import cpu_summary

ARMS = ("none", "head", "blocks", "all", "probe")


# arm -> (pack the blocks, pack the LM head); the probe arm asks the load-time timing
FIXED = {"none": (False, False), "head": (False, True), "blocks": (True, False), "all": (True, True)}


def load_arm(path: str, arm: str, dtype: str = "float32"):
    """The model as `load_model` prepares it in `dtype`, with the packing decision fixed by `arm` (so the
    layers are packed before the padding-free hooks go on, as in every real load). fp32 by default:
    packing is a decision of the fp32 and bf16 decoders (`auto` keeps the blocks in fp16 on a CPU
    without native bf16, `radgen.models.half_weights`, and packs only the head there)."""
    from radgen.generate.decode import load_model
    from radgen.models import fast

    if arm not in FIXED:
        return load_model(path, dtype=dtype)
    timed = fast.packing_pays, fast.layer_packing_pays
    fast.packing_pays = lambda decoder, head=False: FIXED[arm][1 if head else 0]  # pack_linears still skips what this CPU cannot pack
    # the lean forward's fused q/k/v and gate/up are block Linears too: packed (and so fused) with the blocks
    fast.layer_packing_pays = lambda layer, what, head=False: FIXED[arm][1 if head else 0]
    try:
        return load_model(path, dtype=dtype)
    finally:
        fast.packing_pays, fast.layer_packing_pays = timed


def packed_parts(model) -> str:
    from radgen.models import fast

    output = fast.base_model(model.decoder).get_output_embeddings()
    blocks = any(isinstance(m, fast.PackedLinear) and m is not output for m in model.decoder.modules())
    head = isinstance(output, fast.PackedLinear)
    return {(False, False): "none", (False, True): "head", (True, False): "blocks", (True, True): "all"}[(blocks, head)]


def probe_ratios(decoder, repeats: int) -> list[dict]:
    """`repeats` fresh runs of the load-time timing (uncached) on the layers `packing_pays` times,
    the decoder's largest block Linear and its LM head: packed/plain each."""
    from radgen.models import fast

    block, head = fast.packing_probe_layer(decoder), fast.packing_probe_layer(decoder, head=True)
    if block is None or head is None or not (fast.packing_supported(block.weight.dtype) and fast.packing_supported(head.weight.dtype)):
        print("packing_choice: this CPU cannot pack the decoder's weights (or it has no LM head Linear); no probe timings",
              file=sys.stderr)
        return []
    out = []
    for _ in range(repeats):
        packed, plain = fast.time_packing(block, cached=False)
        head_packed, head_plain = fast.time_packing(head, head=True, cached=False)
        out.append({"blocks_shape": [block.in_features, block.out_features], "blocks_packed_over_plain": round(packed / plain, 3),
                    "head_shape": [head.in_features, head.out_features], "head_packed_over_plain": round(head_packed / head_plain, 3)})
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = study_parser(__doc__.splitlines()[0], split="val", batch_sizes="1,32")
    parser.set_defaults(limit=32)
    parser.add_argument("--rounds", type=int, default=4, help="arms take turns over this many slices of the batches")
    parser.add_argument("--probe-repeats", type=int, default=4, help="fresh runs of the load-time packing timing per shape")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                        help="the decoder dtype every arm loads in (default float32: what packing decides for)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generation_dataset, study_batches

    models = {arm: load_arm(args.model, arm, args.dtype) for arm in ARMS}
    probe_choice = packed_parts(models["probe"])
    probe_timings = probe_ratios(models["none"].decoder, args.probe_repeats)
    for timing in probe_timings:
        print(json.dumps(timing), flush=True)
    shipped_table = copy.deepcopy(models["none"].report_draft)
    settings, draft_tokens = greedy_settings(models["none"])
    studies = [s for s in read_manifest(args.manifest) if s.split == args.split][: args.limit]
    dataset = generation_dataset(models["none"], studies, os.path.dirname(os.path.abspath(args.manifest)), "findings")
    counters = {arm: count_passes(model) for arm, model in models.items()}
    # the warm-up decodes a training study: not one of the measured ones
    warm_studies = [s for s in read_manifest(args.manifest) if s.split == "train"][:1] or studies[:1]
    warm = next(study_batches(generation_dataset(models["none"], warm_studies, os.path.dirname(os.path.abspath(args.manifest)),
                                                 "findings"), 1))
    for model in models.values():
        run(model, [warm], draft_tokens, {"calls": 0, "positions": 0, "rescored": 0}, settings)

    rows: list[dict] = []
    load_before = os.getloadavg()
    for batch_size in (int(b) for b in args.batch_sizes.split(",") if b):
        batches = list(study_batches(dataset, batch_size))
        for model in models.values():
            model.report_draft = copy.deepcopy(shipped_table)
        parts: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        for arm, chunk in rotating_rounds(batches, ARMS, args.rounds):
            parts[arm].append(run(models[arm], chunk, draft_tokens, counters[arm], settings))
        results = {arm: combine(parts[arm]) for arm in ARMS}
        for arm in ARMS:
            row = {"batch_size": batch_size, "arm": arm, "packed": packed_parts(models[arm]),
                   "identical_to_none": sum(a == b for a, b in zip(results["none"]["texts"], results[arm]["texts"])),
                   "speedup_vs_none": results["none"]["seconds"] / results[arm]["seconds"],
                   **{k: round(v, 4) if isinstance(v, float) else v for k, v in results[arm].items() if k != "texts"}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| batch | arm | packed | s per report | vs none | identical to none |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['arm']} | {r['packed']} | {r['s_per_report']:.3f} | {r['speedup_vs_none']:.2f}x "
              f"| {r['identical_to_none']}/{r['reports']} |")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, {"model": args.model, "split": args.split, "studies": len(studies), "draft_tokens": draft_tokens,
                                      "decoder_dtype": str(next(models["none"].decoder.parameters()).dtype).replace("torch.", ""),
                                      "probe_choice": probe_choice, "probe_timings": probe_timings, "threads": args.threads, "torch": torch.__version__,
                                      "cpu": cpu_summary(), "loadavg_before": load_before,
                                      "loadavg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      "rows": rows})
    return rows


if __name__ == "__main__":
    main()
