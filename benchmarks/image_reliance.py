"""Does a trained model use its image? Teacher-forced loss with each study's own image vs another's.

    PYTHONPATH=. python benchmarks/image_reliance.py --model runs/small --data iu-phantom/manifest.jsonl \
        [--split val] [--limit 160] [--batch-size 16]

For every study the report loss is computed twice: with the study's own image features, and with
the features of the next study in the batch (a fixed derangement, so every report is paired with
an image of another patient). A model that reads the image scores its own image better; a model
that writes from the language prior alone scores both the same. The gap is a cheap, label-free
check to run before generating anything: radgen-small after 3 epochs with the original
seed-003 mapping layer had a gap of 0.001 nats/token and wrote two distinct reports for 302 studies.
For a grounded model (model.findings) the prompt names the findings the head reads from the image
used, so the gap covers the whole image path (head + visual tokens).

Blind twin (grounded models), --blind-twin --split test:

    PYTHONPATH=. python benchmarks/image_reliance.py --model radgen/assets/default_model \
        --data iu-phantom/manifest.jsonl --blind-twin --split test --json blind_twin.json

The twin is the same model with every image replaced by a blank one: its finding head is refitted
the same way (radgen.train.finding_head, same epochs, early stopping and threshold tuning on the val
split) on the blank image's features, and it decodes the test studies from blank images. Its decoder
is the sighted model's (trained with the true findings in its prompt), so the twin differs only in
what it can see. Both are scored against the manifest's image truth and compared pairwise
(radgen.metrics.stats.paired_test: bootstrap CI of the difference, randomization p-value).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    from radgen.data.dataset import StudyDataset
    from radgen.data.study import read_manifest
    from radgen.generate.decode import select_studies
    from radgen.models.generator import ReportGenerator
    from radgen.pipeline import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a shipped model name (radgen-small), a saved model folder or a run folder (uses RUN/best)")
    parser.add_argument("--data", required=True, help="manifest JSONL")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--blind-twin", action="store_true", help="grounded models: compare with a twin that sees blank images")
    parser.add_argument("--num-beams", type=int, default=1, help="--blind-twin decoding (default greedy)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.blind_twin:
        result = blind_twin(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return result

    model = ReportGenerator.from_pretrained(resolve_model(args.model)).eval()
    studies = select_studies(read_manifest(args.data), args.split, args.limit)
    cfg = model.recipe.data  # the training data options (radgen.train.data.load_splits), so losses match training's
    dataset = StudyDataset(studies, model.image_transform, root=Path(args.data).parent, section=cfg.section, cleaning=cfg.cleaning,
                           images=cfg.images, max_images=cfg.max_images, views=cfg.views)
    totals = {"own_image": 0.0, "other_image": 0.0}
    count = 0
    with torch.inference_mode():
        for start in range(0, len(dataset), args.batch_size):
            items = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
            if len(items) < 2:
                break  # a derangement needs two studies
            # a head with its own encoder blocks reads trunk maps (head_input), the connector the features
            features, head_input = model.features_and_head_input(pixel_values=torch.stack([item["pixel_values"] for item in items]))
            for name, feats, seen in (("own_image", features, head_input), ("other_image", features.roll(1, 0), head_input.roll(1, 0))):
                findings = model.findings.predict(model.finding_logits(seen))[1] if model.grounded_prompt else None
                tokens = model.tokenize_reports([item["report"] for item in items], max_tokens=cfg.max_tokens, findings=findings)
                totals[name] += float(model(image_features=feats, **tokens).loss) * len(items)
            count += len(items)
    result = {key: value / count for key, value in totals.items()} | {"studies": count, "split": args.split, "model": args.model}
    result["gap"] = result["other_image"] - result["own_image"]
    print(json.dumps(result, indent=2))
    return result


def blind_twin(args: argparse.Namespace) -> dict:
    import copy

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, select_studies
    from radgen.metrics.evaluate import evaluate
    from radgen.metrics.stats import paired_test
    from radgen.models.findings import FindingEnsemble, targets_from_labels
    from radgen.pipeline import resolve_model
    from radgen.train.finding_head import fit_head_on_pooled

    model = load_model(resolve_model(args.model))
    studies = read_manifest(args.data)
    test = select_studies(studies, args.split, args.limit if args.limit != 160 else None)
    root = Path(args.data).parent
    options = {"num_beams": args.num_beams, "batch_size": args.batch_size}

    twin = copy.deepcopy(model)
    if isinstance(twin.findings, FindingEnsemble):  # a head that sees only blank images learns the priors: one member does
        twin.findings = twin.findings.members[0]
    size = model.image_transform.size
    from PIL import Image

    with torch.no_grad():  # exactly what the twin sees at generation: a black image through the model's transform
        features = twin.head_input(_BlankTransform(model.image_transform)(Image.new("L", (size, size)))[None])
        if twin.findings.lateral:  # its lateral views are blank too (the dataset loads them through the same transform)
            blank = twin.findings.pool(features, features, torch.ones(1, dtype=torch.bool))
        else:
            blank = twin.findings.pool(features)
    recipe = copy.deepcopy(model.recipe)
    recipe.data.manifest = args.data
    train_set, val_set = _label_sets(recipe, studies)
    names = twin.findings.observations
    train_y = targets_from_labels(*train_set, names)[0]
    val_y = targets_from_labels(*val_set, names)[0]
    fit_head_on_pooled(twin.findings, blank.repeat(len(train_y), 1), train_y, blank.repeat(len(val_y), 1), val_y,
                       recipe.model.findings.max_pos_weight)
    with torch.no_grad():
        twin.findings.set_thresholds(torch.sigmoid(twin.findings.classify(blank.repeat(len(val_y), 1))), val_y)

    sighted_rows = generate_reports(model, test, root=root, progress=True, **options)
    blank_transform = _BlankTransform(model.image_transform)
    twin.image_transform = blank_transform
    twin_rows = generate_reports(twin, test, root=root, progress=True, **options)
    metrics = ["findings", "bleu", "rouge_l", "cider_d"]
    sighted = evaluate(sighted_rows, test, metrics=metrics, return_statistics=True)
    blind = evaluate(twin_rows, test, metrics=metrics, return_statistics=True)
    paired = paired_test(sighted["_statistics"], blind["_statistics"])
    keys = ["findings_abnormal_micro_f1", "findings_abnormal_macro_f1", "bleu4", "rouge_l", "cider_d"]
    result = {"split": args.split, "studies": len(test), "model": args.model, "num_beams": args.num_beams,
              "sighted": {k: sighted["corpus"].get(k) for k in keys}, "blind_twin": {k: blind["corpus"].get(k) for k in keys},
              "paired": {k: {"delta_blind_minus_sighted": paired[k].delta, "ci95": list(paired[k].ci), "p_value": paired[k].p_value}
                         for k in keys if k in paired},
              "distinct_reports": {"sighted": len({r["findings"] for r in sighted_rows}), "blind_twin": len({r["findings"] for r in twin_rows})}}
    print(json.dumps(result, indent=2))
    return result


def _label_sets(recipe, studies):
    """(labels, reports) of the train and val splits, without images (the twin never looks at them)."""
    from radgen.data.text import clean_report

    out = []
    for split in ("train", "val"):
        chosen = [s for s in studies if s.split == split and s.report(recipe.data.section).strip()]
        out.append(([s.labels.get("chexpert") for s in chosen], [clean_report(s.report(recipe.data.section), recipe.data.cleaning) for s in chosen]))
    return out


class _BlankTransform:
    """The model's image transform applied to a blank (black) image of the same size: the twin's eyes."""

    def __init__(self, transform):
        self.transform = transform
        self.size = transform.size

    def __call__(self, image):
        from PIL import Image

        return self.transform(Image.new(image.mode, image.size))


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
