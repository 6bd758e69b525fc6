"""Training-step cost with and without the frozen-encoder feature cache.

    PYTHONPATH=. python benchmarks/train_feature_cache.py [--recipe radgen-small] [--size full|tiny]
        [--studies 32] [--steps 6] [--batch-size 8] [--image-size 512] [--threads 1] [--json out.json]

Writes `--studies` synthetic 8-bit PA radiograph PNGs (smooth lungs + noise) and a manifest into a
temporary folder, builds the recipe's model once, enters its first stage (encoder frozen in every
shipped recipe), fills a feature cache with radgen.train.feature_cache.fill_cache, then times
training steps that do what the trainer does per step —

* off: StudyDataset items (PNG decode, resize, normalise) → collate → tokenize → forward(pixel_values)
  → backward → AdamW step;
* on:  CachedFeatures items (memory-mapped float16 features) → collate → tokenize →
  forward(image_features) → backward → AdamW step;

alternating off/on step by step (after one warm-up step each) so that load from other jobs on a
shared machine hits both alike. Reported per mode: the median process CPU seconds per sample
(1 torch thread by default: idle OpenMP threads would otherwise spin and bill CPU), the single-core
samples/s that implies, and the median wall samples/s; plus the one-time cache fill cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from radgen.config import load_recipe
from radgen.data.dataset import StudyDataset, collate_studies
from radgen.data.study import ImageRef, Study, write_manifest
from radgen.machine import cpu_summary
from radgen.models import build_model
from radgen.train.data import collate_features
from radgen.train.feature_cache import CachedFeatures, FeatureCache, encoder_identity, fill_cache
from radgen.train.stages import apply_stage, build_optimizer, plan_stages

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="radgen-small")
    parser.add_argument("--size", default=None, help="recipe size (default full)")
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per mode (after one warm-up step each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    recipe = load_recipe(args.recipe, size=args.size)
    model = build_model(recipe)
    stage = plan_stages(recipe, steps_per_epoch=1)[0]
    apply_stage(model, stage)
    assert not any(p.requires_grad for p in model.encoder.parameters()), "first stage must freeze the encoder"
    optimizer = build_optimizer(model, stage, recipe.train)
    data = recipe.data

    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_studies(Path(tmp), args.studies, args.image_size)
        pixels = StudyDataset(manifest, model.image_transform, section=data.section, cleaning=data.cleaning, images=data.images)
        cache = FeatureCache(Path(tmp) / "cache", encoder_identity(model), recipe.train.feature_cache_dtype)
        wall, cpu = time.perf_counter(), time.process_time()
        records, encoded = fill_cache(model, pixels, cache, args.batch_size, torch.device("cpu"), progress=False)
        fill = {"images": encoded, "cpu_s_per_image": (time.process_time() - cpu) / encoded, "wall_s": time.perf_counter() - wall}
        features = CachedFeatures(records, cache)

        def step(mode: str, index: int) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            rows = [(index * args.batch_size + k) % args.studies for k in range(args.batch_size)]
            if mode == "off":
                batch = collate_studies([pixels[i] for i in rows])
                visual = {"pixel_values": batch["pixel_values"]}
            else:
                batch = collate_features([features[i] for i in rows])
                visual = {"image_features": batch["image_features"]}
            tokens = model.tokenize_reports(batch["reports"], max_tokens=data.max_tokens)
            loss = model(**tokens, **visual).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return (time.process_time() - cpu) / args.batch_size, args.batch_size / (time.perf_counter() - wall)

        timings: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for index in range(args.steps + 1):
            for mode in ("off", "on"):
                measured = step(mode, index)
                if index > 0:  # step 0 warms up allocators and lazy inits
                    timings[mode].append(measured)

    results = {}
    for mode, values in timings.items():
        cpu = statistics.median(v[0] for v in values)
        results[mode] = {"cpu_s_per_sample": cpu, "single_core_samples_per_s": 1 / cpu, "wall_samples_per_s": statistics.median(v[1] for v in values)}
    speedup = results["off"]["cpu_s_per_sample"] / results["on"]["cpu_s_per_sample"]
    meta = {"recipe": args.recipe, "size": args.size or "full", "steps": args.steps, "batch_size": args.batch_size, "image_size": args.image_size,
            "studies": args.studies, "threads": args.threads, "torch": torch.__version__, "machine": cpu_summary()}
    print(f"{args.recipe} ({meta['size']}), first stage '{stage.name}', batch {args.batch_size}, {args.steps} timed steps per mode, "
          f"{args.image_size}² PNG, {args.threads} torch thread(s)")
    print("| feature cache | CPU s / sample (median) | single-core samples/s | wall samples/s (median, shared machine) |")
    print("|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['cpu_s_per_sample']:.3f} | {r['single_core_samples_per_s']:.2f} | {r['wall_samples_per_s']:.2f} |")
    print(f"speed-up (CPU per sample): {speedup:.2f}x; one-time cache fill: {fill['cpu_s_per_image'] * 1000:.0f} ms CPU per image ({fill['images']} images)")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results, "speedup_cpu": speedup, "cache_fill": fill}, indent=2))


if __name__ == "__main__":
    main()
