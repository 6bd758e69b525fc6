"""Training throughput with and without the frozen-encoder feature cache.

    PYTHONPATH=. python benchmarks/train_feature_cache.py [--recipe radgen-small] [--size full|tiny]
        [--studies 64] [--steps 12] [--batch-size 8] [--image-size 512] [--threads 1] [--json out.json]

Writes `--studies` synthetic 8-bit PA radiograph PNGs (smooth lungs + noise) and a manifest into a
temporary folder, then trains the recipe's first stage (encoder frozen, as in every shipped recipe)
for `--steps` optimizer steps twice: `train.feature_cache=false` (decode + encode every image every
step) and `train.feature_cache=true` (one encoding pass, then batches of cached features).
No validation (eval_every > steps). Reported:

* CPU seconds per training sample in steady state: process CPU time of a (1 + steps)-step run minus
  that of a 1-step run, divided by the samples of those steps (model build, cache fill and the
  warm-up step cancel). Insensitive to other jobs on a shared machine, unlike wall time;
* wall samples/s: median of the trainer's per-step figures (RUN/metrics.jsonl, first step dropped);
* setup wall seconds: the 1-step run (model build + cache fill when on + one step).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from radgen.config import load_recipe
from radgen.data.study import ImageRef, Study, write_manifest
from radgen.train.run_log import read_metrics
from radgen.train.trainer import Trainer

REPORTS = ["the heart is normal in size . the lungs are clear .", "small left pleural effusion . heart size normal .",
           "right lower lobe opacity . no pleural effusion ."]


def make_studies(folder: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    studies = []
    for index in range(count):
        lungs = np.exp(-(((x - 0.3) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2)) + np.exp(-(((x - 0.7) / 0.15) ** 2 + ((y - 0.5) / 0.3) ** 2))
        pixels = np.clip(180 - 90 * lungs + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{index:05d}.png")
        studies.append(Study(study_id=f"b{index}", images=[ImageRef(f"{index:05d}.png", "PA")], sections={"findings": REPORTS[index % 3]},
                             split="train", source="benchmark"))
    write_manifest(folder / "manifest.jsonl", studies)
    return folder / "manifest.jsonl"


def run(recipe_name: str, size: str | None, manifest: Path, out: Path, cache: bool, steps: int, batch: int) -> dict:
    overrides = [f"data.manifest={manifest}", f"train.feature_cache={'true' if cache else 'false'}", f"train.batch_size={batch}",
                 "train.grad_accum=1", f"train.eval_every={steps + 1}", f"train.save_every={steps + 1}", "train.log_every=1",
                 "train.precision=fp32", "train.eval_generate=0", f"train.feature_cache_dir={out / 'cache'}"]
    recipe = load_recipe(recipe_name, overrides, size=size)
    wall, cpu = time.perf_counter(), time.process_time()
    Trainer(recipe, out, max_steps=steps, progress=False).train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = [r for r in read_metrics(out) if r["kind"] == "train"]
    return {"wall_s": wall, "cpu_s": cpu, "samples_per_s": [r["samples_per_s"] for r in rows]}


def measure(recipe_name: str, size: str | None, manifest: Path, root: Path, cache: bool, steps: int, batch: int) -> dict:
    """CPU seconds per sample from two runs (1 step, 1 + steps): their difference is `steps` steady steps,
    model building, cache filling and the first (warm-up) step cancel out."""
    short = run(recipe_name, size, manifest, root / f"short-{cache}", cache, 1, batch)
    long = run(recipe_name, size, manifest, root / f"long-{cache}", cache, 1 + steps, batch)
    return {
        "feature_cache": cache,
        "cpu_s_per_sample": (long["cpu_s"] - short["cpu_s"]) / (steps * batch),
        "samples_per_s_wall": float(np.median(long["samples_per_s"][1:])),  # median: robust to other jobs on the machine
        "setup_wall_s": short["wall_s"],  # model build + (cache fill) + one step
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="radgen-small")
    parser.add_argument("--size", default=None, help="recipe size (default full)")
    parser.add_argument("--studies", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: idle OpenMP threads spin and bill CPU time on a busy machine)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = make_studies(tmp, args.studies, args.image_size)
        for cache in (False, True):
            results.append(measure(args.recipe, args.size, manifest, tmp, cache, args.steps, args.batch_size))
    speedup_cpu = results[0]["cpu_s_per_sample"] / results[1]["cpu_s_per_sample"]
    speedup_wall = results[1]["samples_per_s_wall"] / results[0]["samples_per_s_wall"]
    meta = {"recipe": args.recipe, "size": args.size or "full", "steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size,
            "studies": args.studies, "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    print(f"{args.recipe} ({meta['size']}), batch {args.batch_size}, {args.steps} steady steps, {args.studies} studies of {args.image_size}² PNG, "
          f"{meta['threads']} torch threads")
    print("| feature cache | CPU s / sample | samples/s (wall, median step) | setup + first step, wall s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {'on' if r['feature_cache'] else 'off'} | {r['cpu_s_per_sample']:.3f} | {r['samples_per_s_wall']:.2f} | {r['setup_wall_s']:.1f} |")
    print(f"speed-up: {speedup_cpu:.2f}x (CPU time per sample), {speedup_wall:.2f}x (wall samples/s)")
    speedup = {"cpu": speedup_cpu, "wall": speedup_wall}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results, "speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()
