"""Where an inference process's memory goes while radgen loads a model, step by step (Linux /proc).

    PYTHONPATH=. python benchmarks/load_memory.py [--model NAME_OR_DIR] [--dtype auto] [--keep-mapping] [--json FILE]

Loads the model the way `radgen serve` does (radgen.generate.load_model's steps, spelled out) in
this process and prints, after each step, VmRSS, VmHWM (the peak so far), RssAnon (process memory)
and RssFile (mapped files: shared libraries, memory-mapped checkpoints), then the largest mappings.
--dtype is the decoder dtype `radgen serve --dtype` would get (auto: this CPU's default, e.g. fp16
weights on AVX2-only CPUs). --keep-mapping turns off `radgen.models.fast.own_weights` (the
behaviour before it existed), so the checkpoint mapping the prepared decoder leaves behind can be
compared. Linux only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def status_mb() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024) for key in FIELDS if key in fields}


def largest_mappings(count: int = 8) -> list[dict]:
    """Resident MB per mapped path ([heap], [anon] for anonymous memory) from /proc/self/smaps."""
    resident: Counter = Counter()
    anonymous: Counter = Counter()
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if not parts[0].endswith(":"):  # a mapping's header line: address perms offset dev inode [path]
            name = parts[5] if len(parts) > 5 else "[anon]"
        elif parts[0] == "Rss:":
            resident[name] += int(parts[1])
        elif parts[0] == "Anonymous:":
            anonymous[name] += int(parts[1])
    return [{"mapping": key, "rss_mb": round(kb / 1024), "anonymous_mb": round(anonymous[key] / 1024)}
            for key, kb in resident.most_common(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name, model folder or run (default: the shipped default)")
    parser.add_argument("--dtype", default="auto", help="decoder dtype, as `radgen serve --dtype` (default: auto)")
    parser.add_argument("--keep-mapping", action="store_true", help="skip own_weights (the behaviour before it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    steps: list[dict] = []

    def step(name: str) -> None:
        steps.append({"step": name, **status_mb()})
        print(f"{name:44s} " + " ".join(f"{k}={v}" for k, v in steps[-1].items() if k != "step"), flush=True)

    step("python started")
    import torch  # noqa: F401  (its import is a step of its own: the CUDA build maps large libraries)

    step("import torch")
    import radgen.serve.app  # noqa: F401  (what `radgen serve` imports: transformers, fastapi, ...)
    import uvicorn  # noqa: F401

    step("import radgen.serve, uvicorn")
    from radgen.generate.decode import seed_draft_table
    from radgen.models import ReportGenerator, fast
    from radgen.pipeline import resolve_model

    if args.keep_mapping:
        fast.own_weights = lambda module: 0
    directory = resolve_model(args.model)
    model = ReportGenerator.from_pretrained(str(directory))
    model.eval()
    step("from_pretrained")
    model.merge_adapters()
    step("LoRA merged")
    # what load_model runs (merging again is a no-op): packing, fp16 weights or bf16, then own_weights
    dtype = fast.prepare_for_inference(model, args.dtype)
    step(f"prepared for inference: {fast.decoder_precision(model.decoder)}" + (" (mapping kept)" if args.keep_mapping else ""))
    seed_draft_table(model, directory)
    step("draft table seeded (= serve's idle model)")
    mappings = largest_mappings()
    for row in mappings:
        print(f"  {row['rss_mb']:6d} MB resident, {row['anonymous_mb']:6d} MB anonymous  {row['mapping']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": steps, "largest_mappings": mappings, "dtype": dtype,
                                                "keep_mapping": args.keep_mapping}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
