"""glibc's default malloc against radgen's heap thresholds (`radgen.allocator`), decoding the same studies.

    PYTHONPATH=. python benchmarks/allocator_heap.py --manifest work/default-model/phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split test] [--limit 96] [--batch-size 32] [--pairs 3] \
        [--threads 2] [--with-plain] [--json allocator_heap.json]

The allocator is a process-wide setting, so each arm runs in its own subprocess: `glibc-default`
(radgen's thresholds kept off) and `heap` (as `radgen generate` runs: `prepare_for_inference` sets
them). The arms alternate, `--pairs` times, in an order that swaps every pair, so a VM that drifts
moves both alike. Each subprocess loads the model as `radgen generate` does, decodes one warm-up
batch of training studies, then times default drafted greedy (the model's own settings) over the
chosen studies from the shipped draft table. `--with-plain` adds the plain HF + peft path
(`drafted_decoding.py`'s plain-peft: the model as stored, HF greedy, the same settings) under both
settings: in `drafted_decoding.py` it shares radgen's process and so radgen's thresholds, which a
plain HF + peft user does not have; here `plain/glibc-default` is what such a user runs. Reported
per run: seconds per report, peak RSS (`ru_maxrss`), minor page faults during the timed part, and a
hash of the texts (the two settings must write the same reports: the allocator changes no arithmetic).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from radgen.machine import cpu_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = ("glibc-default", "heap")


def worker(args: argparse.Namespace) -> dict:
    import torch

    from drafted_decoding import run

    from radgen import allocator
    from radgen.data.study import read_manifest
    from radgen.generate.decode import GenerationSettings, generation_dataset, load_model, study_batches
    from radgen.models.fast import fast_paths_disabled

    torch.set_num_threads(args.threads)
    path, setting = args.worker.split("/")
    if setting == "glibc-default":
        allocator._applied.append(False)  # as if already decided: prepare_for_inference leaves glibc as it is
    elif path == "plain" and not fast_paths_disabled():
        allocator.keep_large_blocks_in_heap()  # the model as stored is not prepared: set them as prepare_for_inference would
    model = load_model(args.model, prepare=path == "radgen")
    # drafted_decoding.py's settings and timed loop: the model's greedy settings, drafted or (plain) HF greedy
    generation = GenerationSettings.from_recipe(model.recipe, num_beams=1)
    settings = generation.generate_kwargs()
    for key in ("num_beams", "draft_tokens", "do_sample", "temperature", "top_p"):
        settings.pop(key, None)
    draft_tokens = 0 if path == "plain" else generation.draft_tokens
    studies = read_manifest(args.manifest)
    root = os.path.dirname(os.path.abspath(args.manifest))
    chosen = [s for s in studies if s.split == args.split][: args.limit]
    warm = [s for s in studies if s.split == "train"][:2]
    counter = {"calls": 0, "positions": 0, "rescored": 0}  # run() fills it from hooks this script does not add
    run(model, list(study_batches(generation_dataset(model, warm, root, "findings"), 2)), draft_tokens, counter, settings)
    batches = list(study_batches(generation_dataset(model, chosen, root, "findings"), args.batch_size))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    timed = run(model, batches, draft_tokens, counter, settings)
    texts, seconds = timed["texts"], timed["seconds"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"arm": args.worker, "path": path, "setting": setting, "heap_thresholds_set": bool(allocator._applied and allocator._applied[0]), "reports": len(texts),
            "s_per_report": seconds / max(len(texts), 1), "peak_rss_mib": usage.ru_maxrss / 1024, "page_faults": usage.ru_minflt - faults,
            "texts_sha1": hashlib.sha1("\n".join(texts).encode()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="IU-Phantom manifest (radgen data phantom)")
    parser.add_argument("--model", default="radgen/assets/default_model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--with-plain", action="store_true", help="also time the plain HF + peft path under both settings")
    parser.add_argument("--worker", choices=[f"{p}/{s}" for p in ("radgen", "plain") for s in SETTINGS], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return
    runs = []
    base = [sys.executable, str(Path(__file__).resolve()), "--manifest", args.manifest, "--model", args.model, "--split", args.split,
            "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    arms = [f"{path}/{setting}" for path in (("radgen", "plain") if args.with_plain else ("radgen",)) for setting in SETTINGS]
    for pair in range(args.pairs):
        for arm in arms if pair % 2 == 0 else arms[::-1]:
            done = subprocess.run(base + ["--worker", arm], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {arm} run failed:\n{done.stderr[-3000:]}")
            row = {"pair": pair, **json.loads(done.stdout.strip().splitlines()[-1])}
            runs.append(row)
            print(json.dumps(row), flush=True)
    same_text = all(len({r["texts_sha1"] for r in runs if r["path"] == path}) == 1 for path in {r["path"] for r in runs})
    print("\n| pair | arm | s per report | peak RSS MiB | page faults (timed part) |\n|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['pair']} | {r['arm']} | {r['s_per_report']:.3f} | {r['peak_rss_mib']:.0f} | {r['page_faults']} |")
    print(f"\nsame reports in every run of a path: {same_text}")
    means = {arm: sum(r["s_per_report"] for r in runs if r["arm"] == arm) / args.pairs for arm in arms}
    for arm, mean in means.items():
        print(f"{arm}: {mean:.3f} s per report (mean of {args.pairs})")
    if args.with_plain:
        print(f"radgen/heap vs plain/glibc-default: {means['plain/glibc-default'] / means['radgen/heap']:.2f}x")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, {"runs": runs, "same_text": same_text, "model": args.model, "split": args.split,
                                      "studies": args.limit, "batch_size": args.batch_size, "threads": args.threads,
                                      "cpu": cpu_summary(),
                                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
