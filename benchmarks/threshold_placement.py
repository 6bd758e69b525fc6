"""Where in the best-F1 gap should a finding threshold sit? The lowest score counted present (the edge) or halfway in logits to the next score down (the middle), side by side in one run.

    PYTHONPATH=. python benchmarks/threshold_placement.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --json threshold_placement.json

Both placements make the same decisions on the studies they are tuned on, so the val split cannot
tell them apart as a whole. Two checks that can:
- val, cross-validated: `--splits` random halvings of val; each placement is tuned on one half and
  scored on the other (and the other way round); micro-F1 over the observations with at least
  `--min-positives` positives in val, the two halves' counts pooled. Reported: the mean over
  halvings and how many halvings each placement won.
- test: each placement tuned on the whole val split, scored on `--split` against the manifest's
  image truth (`radgen.metrics.findings`, observations with `--min-positives` positives), the middle
  minus the edge by a paired bootstrap (`radgen.metrics.stats.paired_test`).
The head's probabilities come from the model's own head (`benchmarks/finding_members.py`'s path).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grounded import grounded_parser  # noqa: E402
from finding_members import _logits, halving_f1s, image_truth  # noqa: E402

PLACEMENTS = ("edge", "middle")


def cross_validated(probs, targets, columns: list[int], splits: int, seed: int = 0) -> dict:
    """Per placement, the micro-F1 of two-fold cross-validation on (probs, targets) over `splits` halvings."""
    scores = {p: halving_f1s(probs, targets, columns, splits, p, seed) for p in PLACEMENTS}
    edge, middle = scores["edge"], scores["middle"]
    return {"splits": splits, "mean_micro_f1": {p: round(sum(v) / len(v), 4) for p, v in scores.items()},
            "middle_wins": sum(m > e for m, e in zip(middle, edge)), "edge_wins": sum(e > m for m, e in zip(middle, edge))}


def main(argv: list[str] | None = None) -> dict:
    parser = grounded_parser(__doc__.split("\n\n")[0], split="test")
    parser.add_argument("--min-positives", type=int, default=10, help="observations scored: those with this many positives")
    parser.add_argument("--splits", type=int, default=200, help="random halvings of val for the cross-validation")
    args = parser.parse_args(argv)
    if args.limit:
        raise SystemExit("--limit: thresholds and F1 are meant over whole splits; run without it")

    import torch

    from radgen.machine import cpu_summary
    from radgen.metrics.findings import finding_statistic
    from radgen.metrics.stats import bootstrap, paired_test
    from radgen.models import ReportGenerator
    from radgen.models.findings import best_f1_thresholds
    from radgen.pipeline import resolve_model
    from radgen.train.data import load_splits

    model = ReportGenerator.from_pretrained(str(resolve_model(args.model))).eval()
    if getattr(model, "findings", None) is None:
        raise SystemExit(f"{args.model}: it has no finding head")
    model.recipe.data.manifest = args.data
    _, val_set, test_set = load_splits(model.recipe, model.image_transform, extra=[args.split])
    started = time.perf_counter()
    val_p, test_p = (torch.sigmoid(_logits(model, dataset, args.batch_size, [model.findings])[0]) for dataset in (val_set, test_set))
    seconds = time.perf_counter() - started
    names = model.findings.observations
    val_y, test_labels = image_truth(val_set, test_set, names, args.data, args.split)
    columns = [k for k in range(len(names)) if int(val_y[:, k].sum()) >= args.min_positives]
    cv = cross_validated(val_p, val_y, columns, args.splits)

    statistics, thresholds, test = {}, {}, {}
    key = "findings_abnormal_micro_f1"
    for placement in PLACEMENTS:
        thresholds[placement] = best_f1_thresholds(val_p, val_y, placement=placement)
        found = test_p >= torch.tensor(thresholds[placement])
        predicted = [{n: 1 for n, hit in zip(names, row) if hit} for row in found.tolist()]
        statistics[placement], protocol = finding_statistic(predicted, test_labels, args.min_positives)
        test[placement] = {key: round(float(statistics[placement].corpus()[key]), 4),
                           "ci95": [round(v, 4) for v in bootstrap([statistics[placement]], args.bootstrap)[key]]}
    paired = paired_test([statistics["edge"]], [statistics["middle"]], args.bootstrap)[key]
    out = {"model": args.model, "split": args.split, "studies": len(test_set), "val_studies": len(val_set),
           "val_observations": [names[k] for k in columns], "test_observations": protocol["findings_observations"],
           "seconds": round(seconds, 1), "machine": {"cpu": cpu_summary()},
           "thresholds": {p: dict(zip(names, [round(t, 4) for t in v])) for p, v in thresholds.items()},
           "val_cross_validated": cv, "test": test,
           "test_middle_minus_edge": {"delta": round(paired.delta, 4), "ci95": [round(v, 4) for v in paired.ci],
                                      "p": round(paired.p_value, 4)}}
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


def table(out: dict) -> str:
    """A markdown table: each placement's cross-validated val micro-F1 and its test micro-F1."""
    cv, test = out["val_cross_validated"], out["test"]
    wins = {"edge": cv["edge_wins"], "middle": cv["middle_wins"]}
    lines = [f"| threshold placement | val micro-F1, 2-fold CV (mean of {cv['splits']}) | halvings won | "
             f"{out['split']} micro-F1 | 95% CI |", "|---|---|---|---|---|"]
    for placement in PLACEMENTS:
        row = test[placement]
        lines.append(f"| {placement} | {cv['mean_micro_f1'][placement]:.3f} | {wins[placement]} | "
                     f"{row['findings_abnormal_micro_f1']:.3f} | [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] |")
    paired = out["test_middle_minus_edge"]
    lines.append(f"\nmiddle minus edge on {out['split']}: {paired['delta']:+.3f} [{paired['ci95'][0]:+.3f}, "
                 f"{paired['ci95'][1]:+.3f}] (p={paired['p']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
