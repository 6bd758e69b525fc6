"""Retrieval-guided greedy: which guide pool, margin and length floor, chosen on a validation split, in one run.

    PYTHONPATH=. python benchmarks/guided_decoding.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split val --pools 1,20,40 --margins 0,2,3,5 --floors 40,45,50 \
        --json guided_val.json

Each (pool, margin, floor) decodes every study of `--split` with the model's default decoding
otherwise (drafted greedy, findings-consistent), `generate.guide_pool` = pool,
`generate.guide_margin` = margin and `min_new_tokens` = floor; margin 0 is the decoder's own greedy
text (decoded once per floor, whatever the pools). The guide of a study is the report of the
memory's study with the nearest indication, or with pool > 1 the consensus report of that many
nearest (radgen.models.memory): the model folder's report_memory.json, or, when it has none, the
`--memory-split` (default train) studies of `--data`. Also scored: the `nearest-train` baseline,
which copies the pool-1 guide, and `consensus-train` for each pool > 1, which copies that guide.

Scores: `radgen.metrics.evaluate` (abnormal-finding micro-F1 against the image truth, BLEU-4, METEOR
1.5, ROUGE-L, CIDEr-D; no bootstrap), distinct reports, mean words, and `uncovered`: the share of
reports with a sentence about what the finding head does not cover (radgen.models.memory.UNVOUCHED:
the spine, surgery, granulomas, comparisons with earlier studies), which a guide could carry over
from another patient's report (the reference reports' own share is printed first, as a yardstick;
`--whole-guides` turns off the memory's dropping of such sentences from its guides).
The pick is the setting whose smallest relative gain over nearest-train on BLEU-4, METEOR and
CIDEr-D is largest: the generator has to beat copying on all three (issue #14), and relative gains
put metrics of different scales on one footing. Pick on a validation split, never on the split you report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KEYS = ("findings_abnormal_micro_f1", "bleu4", "meteor", "rouge_l", "cider_d")
PICK_KEYS = ("bleu4", "meteor", "cider_d")


def _row(rows: list[dict], studies: list, scorer) -> dict:
    from radgen.metrics.evaluate import evaluate
    from radgen.models.memory import UNVOUCHED

    metrics = ["findings", "bleu", "cider_d", "rouge_l"] + (["meteor"] if scorer is not None else [])
    corpus = evaluate(rows, studies, metrics=metrics, bootstrap=0, meteor_scorer=scorer)["corpus"]
    return {**{key: round(corpus[key], 4) for key in KEYS if key in corpus},
            "distinct_reports": round(len({r["findings"] for r in rows}) / len(rows), 4),
            "mean_words": round(sum(len(r["findings"].split()) for r in rows) / len(rows), 1),
            "uncovered": round(sum(bool(UNVOUCHED.search(r["findings"])) for r in rows) / len(rows), 4)}


def smallest_gain(result: dict, baseline: dict) -> float:
    """The smallest relative gain of `result` over `baseline` on the PICK_KEYS both have (where the
    baseline scores 0, the absolute gain)."""
    return min((result[k] - baseline[k]) / (baseline[k] or 1.0) for k in PICK_KEYS if k in result and k in baseline)


def pick(results: list[dict], baseline: dict) -> dict:
    """The result whose smallest relative gain over `baseline` (on BLEU-4, METEOR, CIDEr-D) is largest."""
    return max(results, key=lambda r: smallest_gain(r, baseline))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="radgen-small")
    parser.add_argument("--data", required=True, help="manifest with the split, its labels, and (without a stored memory) a train split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--memory-split", default="train", help="split stored as the memory when the model folder has none")
    parser.add_argument("--pools", default="1", help="comma-separated guide pools (generate.guide_pool)")
    parser.add_argument("--margins", default="0,2,3,5,8", help="comma-separated guide margins (logits)")
    parser.add_argument("--floors", default="40,45,50", help="comma-separated min_new_tokens values")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--whole-guides", action="store_true", help="guides keep their sentences on unvouched topics "
                                                                    "(ReportMemory.vouched_only false)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, resolve_model_dir, seed_draft_table, select_studies
    from radgen.metrics.baselines import baseline_predictions
    from radgen.metrics.meteor import MeteorScorer, MeteorUnavailable
    from radgen.models.memory import memory_from_studies
    from radgen.pipeline import resolve_model

    directory = resolve_model_dir(resolve_model(args.model))
    model = load_model(directory)
    all_studies = read_manifest(args.data)
    studies = select_studies(all_studies, args.split, args.limit)
    if model.report_memory is None:
        model.report_memory = memory_from_studies(select_studies(all_studies, args.memory_split), model.recipe)
        memory = f"{len(model.report_memory)} {args.memory_split!r} reports of {args.data}"
    else:
        memory = f"{len(model.report_memory)} reports stored in {directory}"
    model.report_memory.vouched_only = not args.whole_guides
    print(f"memory: {memory}" + (" (whole guides)" if args.whole_guides else ""), file=sys.stderr)
    ids = {s.study_id for s in studies}
    nearest = [r for r in baseline_predictions(all_studies, "nearest-train", test_split=args.split) if r["study_id"] in ids]
    try:
        scorer = MeteorScorer()
    except MeteorUnavailable as err:
        print(f"note: METEOR skipped ({err})", file=sys.stderr)
        scorer = None
    try:
        references = [{"study_id": s.study_id, "findings": s.report("findings")} for s in studies]
        print(json.dumps({"system": "reference reports", **_row(references, studies, scorer)}), flush=True)
        baseline = _row(nearest, studies, scorer)
        print(json.dumps({"system": "nearest-train", **baseline}), flush=True)
        pools = [int(v) for v in args.pools.split(",")]
        consensus = {}
        for pool in (p for p in pools if p > 1):
            rows = [r for r in baseline_predictions(all_studies, "consensus-train", test_split=args.split, pool=pool) if r["study_id"] in ids]
            consensus[pool] = _row(rows, studies, scorer)
            print(json.dumps({"system": f"consensus-train (pool {pool})", **consensus[pool]}), flush=True)
        results = []
        settings = [(pool, margin, floor) for pool in pools for margin in (float(v) for v in args.margins.split(","))
                    for floor in (int(v) for v in args.floors.split(","))]
        unguided = {}  # floor -> margin-0 result: the same text whatever the pool
        for pool, margin, floor in settings:
            if margin == 0 and floor in unguided:
                continue
            model.report_draft.clear()  # every setting starts from the shipped draft table (speed only)
            seed_draft_table(model, directory)
            started = time.perf_counter()
            rows = generate_reports(model, studies, root=Path(args.data).parent, progress=False, num_beams=1,
                                    guide_margin=margin, min_new_tokens=floor, guide_pool=pool)
            result = {"guide_pool": pool if margin > 0 else 1, "guide_margin": margin, "min_new_tokens": floor,
                      **_row(rows, studies, scorer), "seconds": round(time.perf_counter() - started, 1)}
            if margin == 0:
                unguided[floor] = result
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if scorer is not None:
            scorer.close()
    best = pick(results, baseline)
    print(f"pick: guide_pool {best['guide_pool']}, guide_margin {best['guide_margin']:g}, min_new_tokens {best['min_new_tokens']} "
          f"(smallest relative gain over nearest-train on BLEU-4, METEOR, CIDEr-D: "
          f"{smallest_gain(best, baseline):+.1%})")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(args.model), "split": args.split, "studies": len(studies), "memory": memory,
                                               "nearest_train": baseline,
                                               "consensus_train": {str(k): v for k, v in consensus.items()}, "results": results, "pick": best}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
