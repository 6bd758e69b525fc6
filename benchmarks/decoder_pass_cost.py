"""What one decoder pass costs on this CPU, by batch and pass width: why drafting pays where it does.

    PYTHONPATH=. python benchmarks/decoder_pass_cost.py [--model radgen/assets/default_model] [--threads 2]
        [--forms plain,merged,packed,bf16,compiled,lean,lean-packed,lean-unpacked,lean-unfused] [--rounds 1]
        [--json decoder_pass_cost.json]

Drafted greedy decoding (`radgen.models.speculative`) scores `width` positions per row in one
pass. It pays when a pass over 9 positions costs little more than a pass over 1 (a step bound by
reading the weights, or by fixed per-pass overhead) and stops paying when the pass is compute-bound.
For each inference form of the shipped decoder, this times one pass with a 60-position KV cache at
batch 1 and 32, width 1 and 9 (median of 12, the cache cropped back after each pass):

- `plain`: LoRA unmerged, unpacked (what HF + peft runs);
- `merged`: LoRA merged, unpacked (RADGEN_PACK_LINEARS=0);
- `packed`: LoRA merged, Linear weights packed for oneDNN (RADGEN_PACK_LINEARS=1);
- `bf16`: merged, bfloat16, packing as this CPU's timing decides;
- `compiled`: `merged` under `torch.compile(dynamic=True)` (Inductor, needs a C++ compiler; it
  cannot lower radgen's packed weights, "weight must be a graph constant"). Its
  first call of every shape compiles; the time that takes is reported on its own (`compile_s`),
  and the passes are timed after it. Not in the default `--forms` (minutes of compiling);
- `lean`: what `radgen generate` runs on CPU since 2026-12-01: merged, the body's lean forward
  (`radgen.models.lean_forward`) with q/k/v and gate/up fused, packing as this CPU's timing decides;
- `lean-packed` / `lean-unpacked`: `lean` with every Linear packed / none (RADGEN_PACK_LINEARS=1 /
  0), to set next to `packed` / `merged` like for like;
- `lean-unfused`: the lean forward without the fused projections (RADGEN_LEAN_FORWARD=unfused).

Every form but the lean ones runs transformers' own forward (RADGEN_LEAN_FORWARD=0), as all
forms did before the lean forward existed, so their rows compare with earlier runs'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from radgen.machine import cpu_summary


def pass_times(decoder, batch_sizes=(1, 32), widths=(1, 9), cache_len: int = 60, repeats: int = 12) -> dict[str, float]:
    import torch
    from transformers import DynamicCache

    dtype = next(decoder.parameters()).dtype
    hidden = decoder.get_input_embeddings().weight.shape[1]
    generator = torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        for width in widths:
            for batch in batch_sizes:
                cache = DynamicCache()
                decoder(inputs_embeds=torch.randn(batch, cache_len, hidden, generator=generator).to(dtype), use_cache=True, cache=cache)
                step = torch.randn(batch, width, hidden, generator=generator).to(dtype)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    decoder(inputs_embeds=step, use_cache=True, cache=cache)
                    times.append(time.perf_counter() - start)
                    cache.crop(-width)
                out[f"batch {batch}, width {width}"] = statistics.median(times) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="radgen/assets/default_model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--forms", default="plain,merged,packed,bf16,lean")
    parser.add_argument("--rounds", type=int, default=1, help="time every form this many times, taking turns; best round kept")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    from radgen.generate.decode import load_model

    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, float]] = {}
    compile_seconds = {}
    decoders = {}
    forms = args.forms.split(",")
    for form in forms:
        env = {"RADGEN_PACK_LINEARS": {"merged": "0", "packed": "1", "compiled": "0", "lean-packed": "1", "lean-unpacked": "0"}.get(form),
               "RADGEN_LEAN_FORWARD": {"lean": None, "lean-packed": None, "lean-unpacked": None, "lean-unfused": "unfused"}.get(form, "0")}
        previous = {name: os.environ.pop(name, None) for name in env}
        os.environ.update({name: value for name, value in env.items() if value is not None})
        try:
            model = load_model(args.model, merge_lora=form != "plain", dtype="bfloat16" if form == "bf16" else "float32")
        finally:
            for name, value in previous.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value
        decoder = model.decoder
        if form == "compiled":
            decoder = torch.compile(decoder, dynamic=True)
            start = time.perf_counter()
            pass_times(decoder, repeats=2)  # every shape once: the compiling, not timed as a pass
            compile_seconds[form] = time.perf_counter() - start
            print(f"compiled: {compile_seconds[form]:.0f} s compiling (first call of each shape)", flush=True)
        decoders[form] = decoder
    # the forms take turns, in an order that rotates from round to round, and each keeps its best
    # round: a shared VM drifts 10-20% over minutes, and one form after another measured the drift
    for r in range(args.rounds):
        for form in forms[r % len(forms):] + forms[: r % len(forms)]:
            times = pass_times(decoders[form])
            results[form] = {k: min(v, results.get(form, {}).get(k, v)) for k, v in times.items()}
            print(f"round {r + 1}", form, json.dumps({k: round(v, 1) for k, v in times.items()}), flush=True)
    shapes = list(next(iter(results.values())))
    print("\n| form | " + " | ".join(f"{s} (ms)" for s in shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for form, row in results.items():
        print(f"| {form} | " + " | ".join(f"{row[s]:.1f}" for s in shapes) + " |")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, {"model": args.model, "threads": args.threads, "cpu": cpu_summary(),
                                      "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      "loadavg": os.getloadavg(), "rounds": args.rounds, "ms": results, "compile_s": compile_seconds})


if __name__ == "__main__":
    main()
