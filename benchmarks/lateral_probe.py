"""Does the lateral view help a finding head? Linear probes on frozen encoder features, frontal vs frontal + lateral.

    PYTHONPATH=. python benchmarks/lateral_probe.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --json lateral_probe.json

The model's frozen image encoder embeds the PA and the lateral image of every study (mean and max
pooled over its tokens, as `FindingHead.pool` does). Per observation, a class-balanced logistic
regression is fitted on the train split with its C (0.003 / 0.01 / 0.03) chosen by val AUROC and its
threshold by val F1, then scored on the test split: frontal only, lateral only, and both views
concatenated. Truth: the manifest's `labels.chexpert` (uncertain = present).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

OBSERVATIONS = ("Cardiomegaly", "Support Devices", "Pleural Effusion", "Edema", "Atelectasis", "Lung Opacity")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="radgen-small")
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from radgen.data.images import load_image
    from radgen.data.study import read_manifest
    from radgen.generate.decode import load_model
    from radgen.pipeline import resolve_model

    model = load_model(resolve_model(args.model))
    root = Path(args.data).parent
    studies = [s for s in read_manifest(args.data) if any(r.is_frontal for r in s.images) and any(not r.is_frontal for r in s.images)]
    views: dict[str, list[np.ndarray]] = {"frontal": [], "lateral": []}
    with torch.no_grad():
        for start in range(0, len(studies), 32):
            chunk = studies[start:start + 32]
            for view, pick in (("frontal", lambda s: next(r for r in s.images if r.is_frontal)),
                               ("lateral", lambda s: next(r for r in s.images if not r.is_frontal))):
                pixels = torch.stack([model.image_transform(load_image(root / pick(s).path)) for s in chunk])
                tokens = model.encode_images(pixels).float()
                views[view].append(torch.cat([tokens.mean(1), tokens.amax(1)], -1).numpy())
    features = {view: np.concatenate(rows) for view, rows in views.items()}
    features["frontal+lateral"] = np.concatenate([features["frontal"], features["lateral"]], 1)
    split = np.array([(s.split or "").lower() for s in studies])
    truth = np.array([[1 if ((s.labels.get("chexpert") or {}).get(o) in (1, -1)) else 0 for o in OBSERVATIONS] for s in studies])
    train, val, test = split == "train", split == "val", split == "test"
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, x in features.items():
        x = StandardScaler().fit(x[train]).transform(x)
        results[name] = {}
        for k, observation in enumerate(OBSERVATIONS):
            best = None
            for c in (0.003, 0.01, 0.03):
                clf = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x[train], truth[train, k])
                auc = roc_auc_score(truth[val, k], clf.decision_function(x[val]))
                if best is None or auc > best[0]:
                    best = (auc, clf)
            val_auc, clf = best
            p_val, p_test = clf.predict_proba(x[val])[:, 1], clf.predict_proba(x[test])[:, 1]
            thresholds = np.linspace(0.05, 0.95, 91)
            threshold = thresholds[int(np.argmax([f1_score(truth[val, k], p_val >= t, zero_division=0) for t in thresholds]))]
            results[name][observation] = {"val_auroc": round(float(val_auc), 3),
                                          "test_auroc": round(float(roc_auc_score(truth[test, k], p_test)), 3),
                                          "test_f1": round(float(f1_score(truth[test, k], p_test >= threshold, zero_division=0)), 3),
                                          "test_positives": int(truth[test, k].sum())}
    print("| observation (test positives) | " + " | ".join(f"{n}: test F1 (AUROC)" for n in results) + " |")
    print("|---|" + "---|" * len(results))
    for observation in OBSERVATIONS:
        cells = [f"{results[n][observation]['test_f1']:.3f} ({results[n][observation]['test_auroc']:.3f})" for n in results]
        print(f"| {observation} ({results['frontal'][observation]['test_positives']}) | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(args.model), "studies": len(studies), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
