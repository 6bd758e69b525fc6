"""How often do IU's radiologists clear the whole study ("no acute disease") beside each finding?

    PYTHONPATH=. python benchmarks/all_clear_rates.py --data work/default-model/phantom/manifest.jsonl --split train \
        --json all_clear_rates.json

For each CheXpert observation, the share of the `--split` reports of studies with it present or
uncertain (the manifest's `labels.chexpert`, the image truth) whose findings text, cleaned as
radgen-small trains (`r2gen-iu`), has a sentence that clears the study
(`radgen.models.consistency.clears_the_study`); "(none)" is the studies with no abnormal
observation. This is what `ALL_CLEAR_CONTRADICTED` in radgen/models/consistency.py rests on: beside
those findings radiologists rarely write such a sentence.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from radgen.data.study import read_manifest
    from radgen.data.text import clean_report
    from radgen.models.consistency import ALL_CLEAR_CONTRADICTED, clears_the_study, report_sentences

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="manifest with reports and labels.chexpert")
    parser.add_argument("--split", default="train")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    studies, clearing = Counter(), Counter()
    for study in read_manifest(args.data):
        text = clean_report(study.sections.get("findings") or "", "r2gen-iu")
        if study.split != args.split or not text:
            continue
        clears = any(clears_the_study(sentence) for sentence in report_sentences(text))
        present = [name for name, value in (study.labels.get("chexpert") or {}).items() if value in (1, -1) and name != "No Finding"]
        for name in present or ["(none)"]:
            studies[name] += 1
            clearing[name] += clears
    out = {"split": args.split, "data": args.data,
           "observations": {name: {"studies": n, "share_with_an_all_clear_sentence": round(clearing[name] / n, 3),
                                   "contradicted": name in ALL_CLEAR_CONTRADICTED}
                            for name, n in studies.most_common()}}
    print("| observation | studies | reports with an all-clear sentence | in ALL_CLEAR_CONTRADICTED |\n|---|---|---|---|")
    for name, row in out["observations"].items():
        print(f"| {name} | {row['studies']} | {row['share_with_an_all_clear_sentence']:.0%} | {'yes' if row['contradicted'] else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
