"""Drafted greedy decoding vs plain HF + peft greedy, on real report lengths, in one process.

    PYTHONPATH=. python benchmarks/drafted_decoding.py --manifest data/iu-phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split test] [--limit 96] [--batch-sizes 1,16]
        [--draft-tokens 16] [--threads 2] [--lanes N] [--also-dtype float32|bfloat16|int8] [--also-pack-hint 1]
        [--also-concat-cache] [--also-one-lane] [--skip radgen-hf,...]
        [--json drafted_decoding.json]

Drafting only pays where the model writes text it has written before, so this benchmark cannot
use random weights or forced lengths (perf_compare.py's protocol): it decodes the trained model's
own reports from IU-Phantom images, each to its natural end (eos), with the model's greedy settings
(`GenerationSettings.from_recipe`: the recipe's length floor, `no_repeat_ngram_size` and
findings-consistency edits; the study's indication and lateral view where the model reads them,
exactly as `radgen generate` passes them). Configs, each over the same studies and batches:

- `plain-peft`: the model as stored (`load_model(..., prepare=False)`): LoRA unmerged, fp32,
  the timm encoder as timm builds it (NCHW, batch norms unfolded), HF `generate` greedy (what an HF +
  peft user runs; before 2026-11-30 this config also had radgen's channels-last encoder);
- `radgen-hf`: `radgen generate`'s model preparation (LoRA merged, weights packed where that pays,
  the decoder dtype `auto` picks: bf16 on a CPU with native bf16, else fp32), HF greedy;
- `radgen-drafted`: the same model with drafted decoding and the draft table it ships with
  (MODEL/draft_reports.txt: its own reports on the validation split, never this split), which
  learns as it goes, as a server's does; reset to the shipped table for each batch size, so no
  batch size drafts from the reports another wrote for the same studies;
- `radgen-drafted-cold`: drafted decoding from an empty table that learns as it goes (a model
  without draft_reports.txt);
- `radgen-drafted-whole-head`: `radgen-drafted` with its picks made over the whole LM head, as
  before 2026-12-01 (`model.shortlist = None`; the default picks over the reports' tokens and
  checks them against the whole vocabulary, `radgen.models.shortlist`): what the shortlist buys;
- `radgen-drafted-DTYPE` (only with --also-dtype DTYPE): `radgen-drafted` with the decoder in DTYPE,
  e.g. float32 on a CPU where the default is bf16, or int8, to see what the dtype alone buys; its
  draft table is reset to the shipped one for every batch size, as radgen-drafted's is;
- `radgen-drafted-hintN` (only with --also-pack-hint N): `radgen-drafted` with its packed weights
  laid out by oneDNN for N input rows (`radgen.models.packed_linear.PACK_ROWS_HINT`, 16; before
  2026-12-02, 1), its packing decisions timed in that layout; its draft table reset as above;
- `radgen-drafted-concat-cache` (only with --also-concat-cache): `radgen-drafted` with transformers'
  own KV cache, which concatenates every pass, instead of `radgen.models.kv_cache`'s growing one
  (before 2026-12-02); the same numbers, so what the growing cache buys; its draft table reset as above;
- `radgen-drafted-one-lane` (only with --also-one-lane): `radgen-drafted` decoding one batch at a
  time on all the threads, as before 2026-12-03; with --also-dtype DTYPE also
  `radgen-drafted-DTYPE-one-lane`; their draft tables reset as above.

radgen's configs decode their batches in lanes as `radgen generate` does (`radgen.generate.lanes`:
a bf16 or fp16-weight decoder on 2 threads decodes two batches at once, one thread each; fp32 and
int8 one at a time; `--lanes` overrides), each round's batches
together; plain-peft and the one-lane config decode one batch at a time on all the threads. So a
round needs two batches or more for lanes to matter: at batch 32, `--limit 128 --rounds 2`.

Reported per config: seconds per report, reports/s, generated tokens/s, decoder passes, the real
(unpadded) positions those passes fed the decoder (and, of them, the positions drafted decoding fed
to score findings-edited reports on its caches, `radgen.models.rescoring`; HF decoding re-scores
edits in a full teacher-forced pass, counted in its positions only), and how many reports are
identical to `plain-peft`'s. Every config gets one warm-up batch first (not from
the measured studies, so the cold table stays cold). The configs take turns (`--rounds`): each
batch size's batches are cut into rounds, and in each round every config decodes that round's
batches, in an order that rotates from round to round, so a machine that slows down or speeds up
during the run (a shared VM drifts 10-20% over minutes) moves every config alike, not the one
that happened to run then.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import threading
import time

import torch

from radgen.data.study import read_manifest
from radgen.data.dataset import lateral_inputs
from radgen.generate.decode import GenerationSettings, generation_dataset, load_model, study_batches
from radgen.generate.lanes import model_lanes, run_in_lanes
from radgen.machine import cpu_summary
from radgen.models import packed_linear, rescoring, speculative
from radgen.models.fast import decoder_precision, lm_body_and_head
from radgen.models.padding_free import new_positions_mask

CONFIGS = ("plain-peft", "radgen-hf", "radgen-drafted", "radgen-drafted-cold", "radgen-drafted-whole-head")
SKIPPABLE = {"radgen-hf", "radgen-drafted-cold", "radgen-drafted-whole-head"}  # plain-peft is the reference, radgen-drafted the default


def count_passes(model) -> dict:
    """Count decoder passes (prefill + one per HF step or drafted pass) and the real (unpadded)
    positions they feed: calls of the decoder's body (drafted passes call the body alone and run
    the LM head only where verification reads). Positions are the work: on a CPU whose matrix
    products run at full speed, a pass costs about its positions times the weights."""
    counter = {"calls": 0, "positions": 0, "rescored": 0}
    _RESCORING[id(model.decoder)] = counter
    split = lm_body_and_head(model.decoder)
    decoder = model.decoder.get_base_model() if hasattr(model.decoder, "get_base_model") else model.decoder  # peft: HF generate calls the base
    counted = split[0] if split is not None else decoder

    def count(_module, _args, kwargs) -> None:
        new = new_positions_mask(kwargs)
        with _COUNTING:  # decoding lanes call from several threads
            counter["calls"] += 1
            counter["positions"] += int(new.sum()) if new is not None else 0

    counted.register_forward_pre_hook(count, with_kwargs=True)
    return counter


_COUNTING = threading.Lock()
_RESCORING: dict[int, dict] = {}  # id(decoder) -> its counter, for the re-scoring passes of drafted decoding
_score_on_cache = rescoring._score_on_cache


def _counted_score_on_cache(decoder, cache, cache_mask, starts, fed, targets, pad):
    """rescoring's one pass, counting the positions it feeds (part of the counter's positions too)."""
    counter = _RESCORING.get(id(decoder))
    if counter is not None:
        with _COUNTING:
            counter["rescored"] += sum(len(tokens) for tokens in fed)
    return _score_on_cache(decoder, cache, cache_mask, starts, fed, targets, pad)


rescoring._score_on_cache = _counted_score_on_cache


def combine(parts: list[dict]) -> dict:
    """One config's results over several rounds, as if its batches had run in one go."""
    total = {key: sum(p[key] for p in parts) for key in ("reports", "seconds", "cpu_seconds", "tokens", "decoder_calls", "decoder_positions",
                                                         "rescored_positions")}
    total["texts"] = [text for p in parts for text in p["texts"]]
    return {**total, "s_per_report": total["seconds"] / total["reports"], "reports_per_s": total["reports"] / total["seconds"],
            "tokens_per_s": total["tokens"] / total["seconds"], "tokens_per_report": total["tokens"] / total["reports"]}


def greedy_settings(model) -> tuple[dict, int]:
    """The model's default greedy settings as `run` takes them (length floor, n-gram blocking,
    findings-consistency edits, guide), and its recipe's draft length, as `radgen generate` applies them."""
    settings = GenerationSettings.from_recipe(model.recipe, num_beams=1).generate_kwargs()
    draft_tokens = settings.pop("draft_tokens", 16)
    for key in ("num_beams", "do_sample", "temperature", "top_p"):
        settings.pop(key, None)
    return settings, draft_tokens


@contextlib.contextmanager
def concatenating_cache():
    """Drafted decoding on transformers' own DynamicCache (a `torch.cat` a pass) while inside."""
    from transformers import DynamicCache

    growing = speculative.growing_cache
    speculative.growing_cache = DynamicCache
    try:
        yield
    finally:
        speculative.growing_cache = growing


def rotating_rounds(batches: list, names: tuple[str, ...], rounds: int):
    """(name, slice of the batches) pairs: every config decodes each of `rounds` slices, the configs
    taking turns in a rotating order, so a VM that drifts moves every config alike."""
    rounds = max(1, min(rounds, len(batches)))
    for r in range(rounds):
        chunk = batches[r * len(batches) // rounds: (r + 1) * len(batches) // rounds]
        for name in names[r % len(names):] + names[: r % len(names)]:
            yield name, chunk


def run(model, batches, draft_tokens: int, counter: dict, settings: dict, lanes: int = 1) -> dict:
    """Decode `batches` as `radgen generate` does, `lanes` batches at once (`radgen.generate.lanes`)."""
    counter["calls"] = counter["positions"] = counter["rescored"] = 0

    def decode(batch) -> list:
        # exactly what `radgen generate` passes: the study's indication and lateral view where the model uses them
        return model.generate(pixel_values=batch["pixel_values"], contexts=batch.get("contexts"), **lateral_inputs(batch),
                              num_beams=1, draft_tokens=draft_tokens, **settings)

    reports, wall, cpu = [], time.perf_counter(), time.process_time()
    for out in run_in_lanes(decode, batches, lanes, count=len(batches)):
        reports += out
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(len(r.token_ids) for r in reports)
    return {"reports": len(reports), "seconds": wall, "cpu_seconds": cpu, "tokens": tokens, "s_per_report": wall / len(reports),
            "reports_per_s": len(reports) / wall, "tokens_per_s": tokens / wall, "tokens_per_report": tokens / len(reports),
            "decoder_calls": counter["calls"], "decoder_positions": counter["positions"], "rescored_positions": counter["rescored"],
            "texts": [r.text for r in reports]}


def study_parser(description: str, split: str, batch_sizes: str) -> argparse.ArgumentParser:
    """The arguments every decoding-speed benchmark here takes: which model, which studies, which batches."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--manifest", required=True, help="IU-Phantom manifest (radgen data phantom)")
    parser.add_argument("--model", default="radgen/assets/default_model")
    parser.add_argument("--split", default=split)
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--batch-sizes", default=batch_sizes)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    return parser


def main() -> None:
    from radgen.allocator import one_heap_for_all_threads

    one_heap_for_all_threads()  # as `radgen generate` does first thing: lanes are threads (radgen.allocator)
    parser = study_parser(__doc__.splitlines()[0], split="test", batch_sizes="1,16")
    parser.add_argument("--draft-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="configs take turns over this many slices of the batches")
    parser.add_argument("--skip", default="", help=f"configs to leave out, comma-separated ({', '.join(sorted(SKIPPABLE))})")
    parser.add_argument("--also-dtype", choices=["float32", "bfloat16", "float16", "int8"], default=None,
                        help="also time drafted decoding with the decoder in this dtype")
    parser.add_argument("--also-pack-hint", type=int, default=None,
                        help="also time drafted decoding with the packed weights laid out for this many input rows")
    parser.add_argument("--also-concat-cache", action="store_true",
                        help="also time drafted decoding on transformers' concatenating KV cache")
    parser.add_argument("--lanes", type=int, default=None,
                        help="batches radgen's configs decode at once, as `radgen generate --lanes` (default: what "
                             "`radgen generate` picks for --threads; plain-peft always 1)")
    parser.add_argument("--also-one-lane", action="store_true",
                        help="also time radgen-drafted (and the --also-dtype config) one batch at a time, as before lanes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    skipped = {name for name in args.skip.split(",") if name}
    if skipped - SKIPPABLE:
        parser.error(f"--skip takes {', '.join(sorted(SKIPPABLE))}")
    models = {name: load_model(args.model, prepare=name != "plain-peft") for name in CONFIGS if name not in skipped}
    if "radgen-drafted-whole-head" in models:
        models["radgen-drafted-whole-head"].shortlist = None
    extra = f"radgen-drafted-{args.also_dtype}" if args.also_dtype else None
    if extra:
        models[extra] = load_model(args.model, dtype=args.also_dtype)
    hinted = f"radgen-drafted-hint{args.also_pack_hint}" if args.also_pack_hint else None
    if hinted:
        default_hint = packed_linear.PACK_ROWS_HINT
        packed_linear.PACK_ROWS_HINT = args.also_pack_hint  # read when each layer is packed; the head's own for its shortlist rows
        try:
            models[hinted] = load_model(args.model)
        finally:
            packed_linear.PACK_ROWS_HINT = default_hint
    concat = "radgen-drafted-concat-cache" if args.also_concat_cache else None
    if concat:
        models[concat] = load_model(args.model)
    one_lane = "radgen-drafted-one-lane" if args.also_one_lane else None
    one_lane_extra = f"{extra}-one-lane" if args.also_one_lane and extra else None
    if one_lane:
        models[one_lane] = load_model(args.model)
    if one_lane_extra:
        models[one_lane_extra] = load_model(args.model, dtype=args.also_dtype)
    configs = tuple(models)
    default_dtype = decoder_precision(models["radgen-drafted"].decoder)
    seeded = len(models["radgen-drafted"].report_draft)
    shipped_table = copy.deepcopy(models["radgen-drafted"].report_draft)
    if "radgen-drafted-cold" in models:
        models["radgen-drafted-cold"].report_draft.clear()  # forget draft_reports.txt
    # the model's default greedy settings, as `radgen generate` applies them (length floor, n-gram
    # blocking, findings-consistency edits); every config gets the same ones, only drafting and the
    # model preparation differ
    settings, _ = greedy_settings(models["radgen-drafted"])
    studies = read_manifest(args.manifest)
    root = os.path.dirname(os.path.abspath(args.manifest))
    chosen = [s for s in studies if s.split == args.split][: args.limit]
    warm = [s for s in studies if s.split == "train"][:2]
    dataset = generation_dataset(models["radgen-drafted"], chosen, root, "findings")
    warm_batch = next(study_batches(generation_dataset(models["radgen-drafted"], warm, root, "findings"), 2))
    counters = {name: count_passes(model) for name, model in models.items()}
    for name, model in models.items():
        model.generate(pixel_values=warm_batch["pixel_values"], contexts=warm_batch.get("contexts"), **lateral_inputs(warm_batch),
                       num_beams=1, draft_tokens=args.draft_tokens if "drafted" in name else 0, max_new_tokens=8)
    if "radgen-drafted-cold" in models:
        models["radgen-drafted-cold"].report_draft.clear()  # the warm-up's reports out again

    rows = []
    load_before = os.getloadavg()
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batches = list(study_batches(dataset, batch_size))
        if "radgen-drafted-cold" in models:
            models["radgen-drafted-cold"].report_draft.clear()  # cold for every batch size
        # the shipped table again for every batch size: the reports an earlier batch size wrote for
        # these same studies would draft them almost whole (before 2026-12-01 they stayed, and
        # batch 32, run after batch 1, was measured on a table holding its own reports)
        for name in ("radgen-drafted", "radgen-drafted-whole-head", extra, hinted, concat, one_lane, one_lane_extra):
            if name in models:
                models[name].report_draft = copy.deepcopy(shipped_table)
        parts: dict[str, list[dict]] = {name: [] for name in configs}
        lanes = {}
        for name, chunk in rotating_rounds(batches, configs, args.rounds):
            drafting = args.draft_tokens if "drafted" in name else 0
            # plain HF + peft and the one-lane config decode a batch at a time; radgen's, as `radgen generate` does
            laned = name not in ("plain-peft", one_lane, one_lane_extra)
            lanes[name] = model_lanes(models[name], len(chunk), args.lanes) if laned else 1  # on torch's --threads
            with concatenating_cache() if name == concat else contextlib.nullcontext():
                parts[name].append(run(models[name], chunk, drafting, counters[name], settings, lanes[name]))
        results = {}
        for name in configs:
            results[name] = combine(parts[name])
            reference = results["plain-peft"]["texts"]
            results[name]["identical_to_plain"] = sum(a == b for a, b in zip(reference, results[name]["texts"]))
            row = {"batch_size": batch_size, "config": name, "lanes": lanes[name],
                   **{k: v for k, v in results[name].items() if k != "texts"}}
            row["speedup_vs_plain"] = results["plain-peft"]["seconds"] / results[name]["seconds"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    info = {"model": args.model, "split": args.split, "studies": len(chosen), "draft_tokens": args.draft_tokens, "rounds": args.rounds,
            "seeded_draft_keys": seeded, "default_dtype": default_dtype, "settings": settings,
            # rows each config's packed weights are laid out for (none: nothing packed)
            "packed_layouts": {name: sorted({m.rows_hint for m in model.modules() if isinstance(m, packed_linear.PackedLinear)})
                               for name, model in models.items()}, "threads": args.threads, "torch": torch.__version__,
            "cpu": cpu_summary(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    print("\n| batch | config | lanes | s per report | reports/s | tokens/s | decoder calls | decoder positions per report "
          "| of them re-scoring edits on a cache | identical to plain | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['config']} | {r['lanes']} | {r['s_per_report']:.3f} | {r['reports_per_s']:.2f} | {r['tokens_per_s']:.0f} "
              f"| {r['decoder_calls']} | {r['decoder_positions'] / r['reports']:.0f} | {r['rescored_positions'] / r['reports']:.1f} "
              f"| {r['identical_to_plain']}/{r['reports']} | {r['speedup_vs_plain']:.2f}x |")
    print(f"\n{len(chosen)} studies, {rows[0]['tokens_per_report']:.1f} tokens per report; load average before {load_before}, "
          f"after {info['loadavg_after']}")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, info)


if __name__ == "__main__":
    main()
