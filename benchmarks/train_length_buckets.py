"""radgen-small training throughput with and without length-bucketed batches (and bf16), real reports.

    PYTHONPATH=. python benchmarks/train_length_buckets.py --manifest iu-phantom/manifest.jsonl \
        [--steps 48] [--buckets 16] [--feature-cache fcache] [--configs fp32,fp32-buckets,bf16,bf16-buckets]
        [--json train_length_buckets.json]

Each config is a real `radgen train radgen-small` run (the trainer, its feature cache, the
label-position loss) of --steps optimizer steps of batch 8 on the manifest's training split, with
validation off, from the same seed, each in its own process (accelerate's state is per process);
configs differ only in `train.length_buckets` and `train.precision`. Throughput is the trainer's own samples/s log over all logged windows after the
first (the first holds the warm-up); the padded share is measured on the plan's batches. Share a
feature cache folder (--feature-cache) so the encoder runs once, before the timed runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from radgen.config import load_recipe
from radgen.machine import cpu_summary
from radgen.train.run_log import read_metrics
from radgen.train.trainer import train

CONFIGS = {"fp32": ("fp32", 0), "fp32-buckets": ("fp32", None), "bf16": ("bf16", 0), "bf16-buckets": ("bf16", None)}


def run(manifest: str, cache: str, out: str, steps: int, precision: str, buckets: int) -> dict:
    overrides = [f"data.manifest={manifest}", f"stages.0.max_steps={steps}", f"train.precision={precision}",
                 f"train.length_buckets={buckets}", "train.warmup_steps=5", "train.warmup_ratio=0", "train.eval_every=100000",
                 "train.eval_max_batches=1", "train.eval_generate=0", "train.save_every=100000", "train.log_every=8",
                 f"train.feature_cache_dir={cache}"]
    start = time.perf_counter()
    train(load_recipe("radgen-small", overrides), out, progress=False)
    wall = time.perf_counter() - start
    rows = [r for r in read_metrics(out) if r["kind"] == "train"]
    timed = rows[1:]
    seconds = sum(8 * 8 / r["samples_per_s"] for r in timed)  # 8 steps of batch 8 per logged window
    return {"precision": precision, "length_buckets": buckets, "steps": steps, "samples_per_s": 64 * len(timed) / seconds,
            "run_wall_s": wall, "losses": [round(r["loss"], 4) for r in rows]}


def padded_share(manifest: str, buckets: int) -> float:
    """Share of token positions that are padding in the first epoch's micro-batches."""
    from radgen.models import build_model
    from radgen.train.data import BatchPlan, load_splits, report_lengths

    recipe = load_recipe("radgen-small", [f"data.manifest={manifest}"])
    model = build_model(recipe)
    train_set, _ = load_splits(recipe, model.image_transform)
    lengths = report_lengths(model, train_set, recipe.data.max_tokens)
    plan = BatchPlan(len(train_set), 8, seed=recipe.train.seed, lengths=lengths, bucket_window=buckets)
    used = padded = 0
    for step in range(plan.steps_per_epoch):
        for batch in plan.micro_batches(0, step):
            longest = max(lengths[i] for i in batch)
            used += sum(lengths[i] for i in batch)
            padded += sum(longest - lengths[i] for i in batch)
    return padded / (used + padded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--feature-cache", default=None)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--one", default=None, choices=list(CONFIGS), help=argparse.SUPPRESS)  # one config, in a subprocess
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    manifest = os.path.abspath(args.manifest)
    if args.one:
        precision, buckets = CONFIGS[args.one]
        print(json.dumps(run(manifest, args.feature_cache, args.out, args.steps, precision, args.buckets if buckets is None else buckets)))
        return
    results = {"padded_share": {"plain": padded_share(manifest, 0), "buckets": padded_share(manifest, args.buckets)}}
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.feature_cache or os.path.join(tmp, "fcache")
        for name in args.configs.split(","):
            done = subprocess.run([sys.executable, __file__, "--manifest", manifest, "--steps", str(args.steps), "--buckets", str(args.buckets),
                                   "--feature-cache", cache, "--one", name, "--out", os.path.join(tmp, name)],
                                  check=True, capture_output=True, text=True)
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, json.dumps(results[name]), flush=True)
    base = results.get("fp32", {}).get("samples_per_s")
    print(f"\npadded share of positions: plain {results['padded_share']['plain']:.3f}, buckets {results['padded_share']['buckets']:.3f}")
    print("| config | samples/s | vs fp32 |\n|---|---|---|")
    for name in args.configs.split(","):
        sps = results[name]["samples_per_s"]
        print(f"| {name} | {sps:.2f} | {sps / base:.2f}x |" if base else f"| {name} | {sps:.2f} | – |")
    info = {"cpu": cpu_summary(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "loadavg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **results}
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, info)


if __name__ == "__main__":
    main()
