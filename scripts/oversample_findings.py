"""Write a training manifest in which studies showing the key findings appear N times (class-balanced
sampling by duplication; val/test rows are copied once, unchanged).

Why: radgen-small's decoder, trained with the true findings in its prompt, learned to follow them only
weakly (benchmarks/prompt_reliance.py: a small loss gap between the true and the "none" prompt),
because about two thirds of IU reports are normal and the normal template dominates the loss.
Repeating the abnormal studies gives the prompt-to-sentence mapping more weight. The copies share
the image (the feature cache stores it once) and get study ids "<id>#k".

    python scripts/oversample_findings.py IN.jsonl OUT.jsonl --times 3
"""

import argparse
import json

KEY = ("Cardiomegaly", "Pleural Effusion", "Edema", "Support Devices", "Atelectasis", "Pneumothorax",
       "Consolidation", "Pneumonia", "Enlarged Cardiomediastinum", "Fracture", "Pleural Other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("out")
    parser.add_argument("--times", type=int, default=3)
    args = parser.parse_args()
    rows, extra = [], 0
    with open(args.manifest, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            rows.append(row)
            labels = (row.get("labels") or {}).get("chexpert") or {}
            if row.get("split") == "train" and any(labels.get(name) in (1, -1) for name in KEY):
                for k in range(1, args.times):
                    rows.append({**row, "study_id": f"{row['study_id']}#{k}"})
                    extra += 1
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{args.out}: {len(rows)} rows ({extra} repeats of training studies with key findings)")


if __name__ == "__main__":
    main()
