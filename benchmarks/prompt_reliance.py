"""Does a grounded model's decoder use the findings in its prompt? Teacher-forced loss with the true
findings in the prompt vs with "none", and how often greedy text states a finding the prompt names.

    PYTHONPATH=. python benchmarks/prompt_reliance.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split val --limit 64

1. Loss: on the studies of --split with at least one true finding, the mean report loss (nats/token)
   with the prompt naming the manifest's true findings vs the prompt saying "none". A decoder that
   reads its prompt scores the true prompt clearly lower.
2. Following: for each of Cardiomegaly, Pleural Effusion, Support Devices, Edema, the share of
   `--follow` studies whose greedy report (the decoder's own text, consistent_findings=False) states
   that finding when the prompt names it, read by radgen's labeler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

FOLLOW = ("Cardiomegaly", "Pleural Effusion", "Support Devices", "Edema")


def main(argv: list[str] | None = None) -> dict:
    from radgen.data.dataset import collate_studies
    from radgen.generate.decode import generation_dataset, study_batches
    from radgen.labels.labeler import label_report
    from radgen.models import ReportGenerator
    from radgen.models.findings import names_from_targets, targets_from_labels
    from radgen.pipeline import resolve_model
    from radgen.train.data import load_splits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a shipped model name (radgen-small), a model folder or a run folder (uses RUN/best)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val", choices=("val",))
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--follow", type=int, default=16, help="studies decoded per finding for the following rate")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    model = ReportGenerator.from_pretrained(resolve_model(args.model)).eval()
    recipe = model.recipe
    recipe.data.manifest = args.data
    _, val = load_splits(recipe, model.image_transform)
    names = model.findings.observations
    labels = [s.labels.get("chexpert") for s in val.studies]
    reports = [val.report(i) for i in range(len(val))]
    targets = targets_from_labels(labels, reports, names)[0]
    chosen = [i for i in range(len(val)) if targets[i].any()][: args.limit]
    losses = {"true_findings": 0.0, "none": 0.0}
    with torch.no_grad():
        for start in range(0, len(chosen), 16):
            rows = chosen[start:start + 16]
            batch = collate_studies([val[i] for i in rows])
            truth = names_from_targets(targets[rows], names)
            for key, findings in (("true_findings", truth), ("none", [[] for _ in rows])):
                tokens = model.tokenize_reports(batch["reports"], max_tokens=recipe.data.max_tokens, findings=findings)
                losses[key] += float(model(**tokens, pixel_values=batch["pixel_values"]).loss) * len(rows)
    losses = {k: v / len(chosen) for k, v in losses.items()}
    following = {}
    studies = val.studies[: args.follow]
    pixels = next(study_batches(generation_dataset(model, studies, Path(args.data).parent, recipe.data.section), len(studies)))["pixel_values"]
    for name in FOLLOW:
        out = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=recipe.generate.max_new_tokens,
                             no_repeat_ngram_size=recipe.generate.no_repeat_ngram_size, findings=[[name]] * len(studies),
                             consistent_findings=False)
        following[name] = sum(label_report(r.text).get(name) in (1, -1) for r in out) / len(out)
    result = {"model": args.model, "split": args.split, "studies_loss": len(chosen), "loss": losses,
              "loss_gap_none_minus_true": losses["none"] - losses["true_findings"], "studies_follow": len(studies),
              "states_named_finding": following}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
