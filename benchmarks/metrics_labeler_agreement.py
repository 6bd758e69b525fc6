"""Agreement of the rule-based CheXpert labeler with human MeSH labels on real IU X-Ray reports.

    PYTHONPATH=. python benchmarks/metrics_labeler_agreement.py [--csv ../shared/data/iu_xray_reports/indiana_reports.csv]
        [--uncertain positive|negative] [--errors OBSERVATION] [--markdown]

Ground truth: radgen.labels.mesh.mesh_to_chexpert(MeSH) (1 = present, absent = not present). The
labeler reads findings + impression. A labeler 1 counts as positive; --uncertain decides -1.
Studies whose MeSH is "No Indexing" carry no labels and are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from radgen.labels.labeler import find_mentions, label_report
from radgen.labels.mesh import mesh_to_chexpert
from radgen.labels.observations import CHEXPERT_14

DEFAULT_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "iu_xray_reports" / "indiana_reports.csv"


def load(csv_path: Path) -> list[dict]:
    with open(csv_path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in rows if r["MeSH"].strip().lower() != "no indexing" and (r["findings"] or r["impression"]).strip()]


# A crude comparison labeler: a keyword in a sentence is positive unless the sentence contains a
# negation word anywhere. It shows what the scoped rules of radgen.labels.labeler add.
CRUDE_KEYWORDS = {
    "Enlarged Cardiomediastinum": ["widened mediastinum", "mediastinal widening"], "Cardiomegaly": ["cardiomegaly", "enlarged heart", "heart is enlarged"],
    "Lung Lesion": ["nodule", "mass", "granuloma"], "Lung Opacity": ["opacit", "infiltrat", "airspace disease", "scar"], "Edema": ["edema", "congestion"],
    "Consolidation": ["consolidat"], "Pneumonia": ["pneumonia"], "Atelectasis": ["atelecta"], "Pneumothorax": ["pneumothora"],
    "Pleural Effusion": ["effusion"], "Pleural Other": ["pleural thickening"], "Fracture": ["fracture"],
    "Support Devices": ["catheter", "tube", "pacemaker", "line", "device", "port"],
}
CRUDE_NEGATIONS = ("no ", "not ", "without", "negative", "free of", "clear of")


def crude_label(text: str) -> dict:
    labels = {name: None for name in CHEXPERT_14}
    for sentence in text.lower().replace("\n", " ").split(". "):
        negated = any(cue in f" {sentence}" for cue in CRUDE_NEGATIONS)
        for name, words in CRUDE_KEYWORDS.items():
            if any(w in sentence for w in words):
                labels[name] = 1 if (not negated or labels[name] == 1) else 0
    labels["No Finding"] = None if any(labels[n] == 1 for n in CHEXPERT_14 if n not in ("No Finding", "Support Devices")) else 1
    return labels


def agreement(rows: list[dict], uncertain_positive: bool, labeler=label_report) -> tuple[dict, list[dict], float]:
    positive_values = (1, -1) if uncertain_positive else (1,)
    counts = {name: {"tp": 0, "fp": 0, "fn": 0, "support": 0} for name in CHEXPERT_14}
    predictions = []
    start = time.perf_counter()
    for row in rows:
        text = f"{row['findings']} {row['impression']}"
        labels = labeler(text)
        truth = mesh_to_chexpert(row["MeSH"])
        predictions.append({"row": row, "labels": labels, "truth": truth})
        for name in CHEXPERT_14:
            pred = labels[name] in positive_values
            gold = truth.get(name) == 1
            counts[name]["support"] += gold
            counts[name]["tp"] += pred and gold
            counts[name]["fp"] += pred and not gold
            counts[name]["fn"] += gold and not pred
    return counts, predictions, time.perf_counter() - start


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def micro_f1(counts: dict, min_support: int = 30, exclude: tuple[str, ...] = ()) -> float:
    chosen = [c for name, c in counts.items() if c["support"] >= min_support and name not in exclude]
    tp = sum(c["tp"] for c in chosen)
    fp = sum(c["fp"] for c in chosen)
    fn = sum(c["fn"] for c in chosen)
    return prf(tp, fp, fn)[2]


def table(counts: dict, min_support: int = 30) -> str:
    lines = ["| observation | support | P | R | F1 |", "|---|---:|---:|---:|---:|"]
    tp = fp = fn = 0
    for name in CHEXPERT_14:
        c = counts[name]
        p, r, f = prf(c["tp"], c["fp"], c["fn"])
        mark = "" if c["support"] >= min_support else " (< 30)"
        lines.append(f"| {name}{mark} | {c['support']} | {p:.3f} | {r:.3f} | {f:.3f} |")
        if c["support"] >= min_support:
            tp, fp, fn = tp + c["tp"], fp + c["fp"], fn + c["fn"]
    p, r, f = prf(tp, fp, fn)
    lines.append(f"| **micro, observations with >= {min_support} positives** | | {p:.3f} | {r:.3f} | **{f:.3f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--uncertain", choices=("positive", "negative"), default="negative")
    parser.add_argument("--errors", help="print false positives / negatives of this observation")
    parser.add_argument("--limit", type=int, default=25)
    args = parser.parse_args()
    rows = load(args.csv)
    counts, predictions, seconds = agreement(rows, args.uncertain == "positive")
    print(f"{len(rows)} IU studies with MeSH labels ({args.csv.name}); uncertain counted as {args.uncertain}; labeling took {seconds:.2f} s\n")
    print(table(counts))
    crude, _, _ = agreement(rows, args.uncertain == "positive", labeler=crude_label)
    print(f"\nmicro-F1 over observations with >= 30 positives: radgen {micro_f1(counts):.3f}, crude keyword + sentence-negation labeler {micro_f1(crude):.3f}")
    print(f"the same without No Finding: radgen {micro_f1(counts, exclude=('No Finding',)):.3f}, crude {micro_f1(crude, exclude=('No Finding',)):.3f}")
    for name in ("Support Devices", "Lung Lesion", "Pleural Effusion"):
        print(f"  {name}: radgen F1 {prf(counts[name]['tp'], counts[name]['fp'], counts[name]['fn'])[2]:.3f}, crude {prf(crude[name]['tp'], crude[name]['fp'], crude[name]['fn'])[2]:.3f}")
    split_of = {}
    annotation = args.csv.parent / "annotation.json"
    if annotation.is_file():
        for split, records in json.loads(annotation.read_text()).items():
            split_of.update({str(r["id"]): split for r in records})
        for split in ("train", "val", "test"):
            part = [r for r in rows if split_of.get(str(r["uid"])) == split]
            if part:
                c, _, _ = agreement(part, args.uncertain == "positive")
                print(f"annotation.json {split} split ({len(part)} studies): micro-F1 {micro_f1(c):.3f}")
    if args.errors:
        positive_values = (1, -1) if args.uncertain == "positive" else (1,)
        shown = 0
        for item in predictions:
            pred = item["labels"][args.errors] in positive_values
            gold = item["truth"].get(args.errors) == 1
            if pred != gold and shown < args.limit:
                shown += 1
                kind = "FP" if pred else "FN"
                row = item["row"]
                relevant = [f"{m.text}:{m.label}" for m in find_mentions(f"{row['findings']} {row['impression']}") if m.observation == args.errors]
                print(f"\n[{kind}] uid={row['uid']} MeSH={row['MeSH']}\n  {row['findings']} | {row['impression']}\n  mentions={relevant}")


if __name__ == "__main__":
    main()
