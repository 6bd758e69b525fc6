"""Is a finding head of several members better than one, or than another model's head? Scored side by side in one run.

    PYTHONPATH=. python benchmarks/finding_members.py --model work/ens3 --data work/default-model/phantom/manifest.jsonl \
        --compare radgen/assets/default_model --json finding_members.json

For a model's finding head (a `FindingEnsemble` of `radgen fit-findings --members K`, or one head):
the probabilities of each member, of the mean of the first k members (k = 2..K; the mean of their
logits and the mean of their probabilities, the two `model.findings.member_mean` rules) and, with
`--compare`, of another model's head (on its own preparation of the same studies' images: its head
may read another size) and of both heads' members together, on the val and test splits of `--data`. Every system gets its per-observation
thresholds tuned on val for best F1 (as `fit-findings` tunes them), then is scored on test against the
manifest's image truth (`labels.chexpert`) with `radgen.metrics.findings` (the observations with at
least 10 positives), and compared with the whole head (all members) by a paired bootstrap
(`radgen.metrics.stats.paired_test`). With `--split val` that score is in-sample (the thresholds
are tuned on the studies they are scored on), so each system also gets a cross-validated val
micro-F1 (`--cv-splits` random halvings of val: thresholds tuned on one half, scored on the other,
both ways; the same halvings for every system, so "halvings won" is paired). This scores the head's
findings, which the shipped decoding states in the text; `benchmarks/grounding.py` scores the text
itself, next to the baselines.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grounded import grounded_parser  # noqa: E402


def _logits(model, dataset, batch_size: int, heads: list) -> list:
    """Per head in `heads` (callables of head input, lateral input, mask → logits): (N, K) fp32 logits."""
    import torch

    out: list[list[torch.Tensor]] = [[] for _ in heads]
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            front = model.head_input(torch.stack([item["pixel_values"] for item in items]))
            side = mask = None
            if "lateral_pixel_values" in items[0]:
                side = model.head_input(torch.stack([item["lateral_pixel_values"] for item in items]))
                mask = torch.tensor([bool(item["has_lateral"]) for item in items])
            for rows, head in zip(out, heads):
                rows.append(head(front, side, mask).float())
    return [torch.cat(rows) for rows in out]


def _means(logits: list, which: str) -> dict:
    """The probabilities of `logits`' heads combined both ways a FindingEnsemble can (model.findings.member_mean)."""
    import torch

    stacked = torch.stack(logits)
    return {f"logit mean of {which}": torch.sigmoid(stacked.mean(0)),
            f"probability mean of {which}": torch.sigmoid(stacked).mean(0)}


def _pooled_micro_f1(parts: list[tuple]) -> float:
    """Micro-F1 of (probs, targets, thresholds) parts, their counts summed."""
    tp = predicted = true = 0
    for probs, targets, thresholds in parts:
        hit = probs >= thresholds
        tp += int((hit & targets).sum())
        predicted += int(hit.sum())
        true += int(targets.sum())
    return 2 * tp / max(predicted + true, 1)


def halving_f1s(probs, targets, columns: list[int], splits: int, placement: str = "middle", seed: int = 0) -> list[float]:
    """Two-fold cross-validation of the thresholds on (probs, targets), `splits` times: each random
    halving tunes them (`best_f1_thresholds`) on one half and scores the other, both ways, the
    counts pooled; micro-F1 over `columns`. The same seed gives the same halvings (paired)."""
    import torch

    from radgen.models.findings import best_f1_thresholds

    generator = torch.Generator().manual_seed(seed)
    probs, targets = probs[:, columns], targets[:, columns].bool()
    scores = []
    for _ in range(splits):
        order = torch.randperm(len(probs), generator=generator)
        halves = (order[: len(order) // 2], order[len(order) // 2:])
        parts = []
        for tune, score in (halves, halves[::-1]):
            thresholds = torch.tensor(best_f1_thresholds(probs[tune], targets[tune].float(), placement=placement))
            parts.append((probs[score], targets[score], thresholds))
        scores.append(_pooled_micro_f1(parts))
    return scores


def image_truth(val_set, test_set, names: list[str], data: str, split: str) -> tuple:
    """(val targets (N, K) over `names`, the scored split's label dicts) from the manifest's
    labels.chexpert, the image truth; exits with a clear message where a study has none."""
    from radgen.models.findings import targets_from_labels
    from radgen.train.evaluation import study_finding_labels

    val_labels, test_labels = study_finding_labels(val_set)[0], study_finding_labels(test_set)[0]
    if any(label is None for label in [*val_labels, *test_labels]):
        raise SystemExit(f"{data}: every val and {split} study needs labels.chexpert (the image truth)")
    return targets_from_labels(val_labels, [""] * len(val_labels), names, "manifest")[0], test_labels


def main(argv: list[str] | None = None) -> dict:
    parser = grounded_parser(__doc__.split("\n\n")[0], split="test")
    parser.add_argument("--compare", default=None, help="another model (a single head, e.g. the shipped one) scored the same way")
    parser.add_argument("--min-positives", type=int, default=10, help="observations scored: those with this many positives in the split")
    parser.add_argument("--cv-splits", type=int, default=200,
                        help="random halvings of val for each system's cross-validated val micro-F1 (0: none)")
    args = parser.parse_args(argv)

    import torch

    from radgen.machine import cpu_summary
    from radgen.metrics.findings import finding_statistic
    from radgen.metrics.stats import bootstrap, paired_test
    from radgen.models import ReportGenerator
    from radgen.models.findings import best_f1_thresholds, head_members
    from radgen.pipeline import resolve_model
    from radgen.train.data import load_splits

    torch.manual_seed(0)
    model = ReportGenerator.from_pretrained(str(resolve_model(args.model))).eval()
    if getattr(model, "findings", None) is None:
        raise SystemExit(f"{args.model}: it has no finding head")
    model.recipe.data.manifest = args.data
    _, val_set, test_set = load_splits(model.recipe, model.image_transform, extra=[args.split])
    if args.limit:
        raise SystemExit("--limit: thresholds and F1 are meant over whole splits; run without it")
    members = head_members(model.findings)
    rule = getattr(model.findings, "mean", "logit")  # how the model's own head combines its members
    started = time.perf_counter()
    logits, probs = {}, {}
    for name, dataset in (("val", val_set), (args.split, test_set)):
        logits[name] = _logits(model, dataset, args.batch_size, members)
        probs[name] = {f"member {i + 1}": torch.sigmoid(p) for i, p in enumerate(logits[name])}
        for k in range(2, len(members) + 1):
            probs[name].update(_means(logits[name][:k], f"members 1-{k}"))
    if args.compare:
        other = ReportGenerator.from_pretrained(str(resolve_model(args.compare))).eval()
        if getattr(other, "findings", None) is None:
            raise SystemExit(f"--compare {args.compare}: it has no finding head")
        other.recipe.data.manifest = args.data  # its own image preparation (its head may read another size)
        _, other_val, other_test = load_splits(other.recipe, other.image_transform, extra=[args.split])
        for name, dataset, own in (("val", other_val, val_set), (args.split, other_test, test_set)):
            if [s.study_id for s in dataset.studies] != [s.study_id for s in own.studies]:
                raise SystemExit(f"--compare {args.compare}: its {name} studies are not the model's (other data settings)")
            other_logits = _logits(other, dataset, args.batch_size, [other.findings])[0]
            probs[name][f"compare: {args.compare}"] = torch.sigmoid(other_logits)
            # both heads as members of one: would the two together beat either?
            ours = f"members 1-{len(members)}" if len(members) > 1 else "member 1"
            probs[name].update(_means([*logits[name], other_logits], f"{ours} and compare"))
    seconds = time.perf_counter() - started

    names = model.findings.observations
    val_y, test_labels = image_truth(val_set, test_set, names, args.data, args.split)
    statistics, thresholds = {}, {}
    for system in probs["val"]:
        thresholds[system] = best_f1_thresholds(probs["val"][system], val_y)
        found = probs[args.split][system] >= torch.tensor(thresholds[system])
        predicted = [{n: 1 for n, hit in zip(names, row) if hit} for row in found.tolist()]
        statistics[system], protocol = finding_statistic(predicted, test_labels, args.min_positives)
    whole = f"{rule} mean of members 1-{len(members)}" if len(members) > 1 else "member 1"
    key = "findings_abnormal_micro_f1"
    # on val itself the thresholds are tuned on the studies they are scored on; cross-validation is not
    columns = [k for k in range(len(names)) if int(val_y[:, k].sum()) >= args.min_positives]
    halvings = {system: halving_f1s(p, val_y, columns, args.cv_splits) for system, p in probs["val"].items()} if args.cv_splits else {}
    results = {}
    for system, statistic in statistics.items():
        corpus = statistic.corpus()
        results[system] = {key: round(float(corpus[key]), 4),
                           "findings_abnormal_macro_f1": round(float(corpus["findings_abnormal_macro_f1"]), 4),
                           "ci95": [round(v, 4) for v in bootstrap([statistic], args.bootstrap)[key]]}
        if system != whole:
            paired = paired_test([statistic], [statistics[whole]], args.bootstrap)[key]
            results[system]["ensemble_minus_this"] = {"delta": round(paired.delta, 4), "ci95": [round(v, 4) for v in paired.ci],
                                                      "p": round(paired.p_value, 4)}
        if halvings:
            scores = halvings[system]
            results[system]["val_cv_micro_f1"] = round(sum(scores) / len(scores), 4)
            if system != whole:
                results[system]["val_cv_halvings_whole_head_wins"] = sum(w > o for w, o in zip(halvings[whole], scores))
                results[system]["val_cv_halvings_this_wins"] = sum(o > w for w, o in zip(halvings[whole], scores))
    out = {"model": args.model, "compare": args.compare, "split": args.split, "studies": len(test_set), "val_studies": len(val_set),
           "observations": protocol["findings_observations"], "members": len(members), "whole_head": whole, "seconds": round(seconds, 1),
           "machine": {"cpu": cpu_summary()}, "val_cv_splits": args.cv_splits, "thresholds": thresholds, "systems": results}
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


def table(results: dict) -> str:
    """A markdown table: each system's micro-F1 on the scored split, its CI, the whole head's paired
    difference, and (with --cv-splits) its cross-validated val micro-F1 and the halvings each side won."""
    lines = ["| system | finding micro-F1 | 95% CI | the whole head minus this | val, 2-fold CV | halvings won (whole head / this) |",
             "|---|---|---|---|---|---|"]
    for system, row in results.items():
        versus = row.get("ensemble_minus_this")
        difference = f"{versus['delta']:+.3f} (p={versus['p']:.3f})" if versus else "–"
        cv = f"{row['val_cv_micro_f1']:.3f}" if "val_cv_micro_f1" in row else "–"
        won = (f"{row['val_cv_halvings_whole_head_wins']} / {row['val_cv_halvings_this_wins']}"
               if "val_cv_halvings_this_wins" in row else "–")
        lines.append(f"| {system} | {row['findings_abnormal_micro_f1']:.3f} | [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] | "
                     f"{difference} | {cv} | {won} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
