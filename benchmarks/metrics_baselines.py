"""Image-free baselines on the IU X-Ray development test split, with bootstrap 95% CIs.

    PYTHONPATH=. python benchmarks/metrics_baselines.py [--section findings] [--bootstrap 1000] [--out-dir /tmp/radgen-baselines]

Data: ../shared/data/iu_xray_reports/indiana_reports.csv (sections) with the split of the
development annotation.json (train 2,285 / val 302 / test 290 studies; not R2Gen's split). Test
studies with an empty reference section are skipped (reported). Predictions come from the training
split only (radgen.metrics.baselines); scores from radgen.metrics.evaluate with the default offline
suite and R2Gen IU cleaning.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _iu import iu_studies  # noqa: E402

from radgen.metrics import evaluate  # noqa: E402
from radgen.metrics.baselines import KINDS, baseline_predictions  # noqa: E402
from radgen.metrics.evaluate import write_outputs  # noqa: E402

COLUMNS = ["bleu1", "bleu4", "meteor", "rouge_l", "cider_d", "bertscore_f1", "embed_cos", "ce_r2gen_micro_f1_14", "ce_chexbert_micro_f1_14", "ce_r2gen_macro_f1_14", "ce_r2gen_micro_f1_5", "ce_r2gen_example_f1_14"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", default="findings", choices=("findings", "impression", "both"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/radgen-baselines"))
    args = parser.parse_args()
    studies = [s for s in iu_studies() if s.split]
    results = {}
    for kind in KINDS:
        preds = baseline_predictions(studies, kind, section=args.section)
        results[kind] = evaluate(preds, studies, section=args.section, split="test", bootstrap=args.bootstrap)
        write_outputs(results[kind], args.out_dir / f"{kind}-{args.section}.json")
    first = results[KINDS[0]]
    print(f"IU X-Ray dev test split: {first['n_studies']} studies scored ({first['skipped']['empty_reference']} with empty {args.section} skipped), section {args.section}, cleaning r2gen-iu, {args.bootstrap} bootstrap resamples\n")
    print("| baseline | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for kind, result in results.items():
        cells = []
        for key in COLUMNS:
            if key not in result["corpus"]:
                cells.append("n/a")
                continue
            lo, hi = result["ci95"][key]
            cells.append(f"{result['corpus'][key]:.3f} [{lo:.3f}, {hi:.3f}]")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    protocol = first["protocol"]
    print(f"\nMETEOR: {protocol.get('meteor')}; BERTScore: {protocol.get('bertscore_model')} layer {protocol.get('bertscore_layer')}, idf {protocol.get('bertscore_idf')}, rescaled {protocol.get('bertscore_rescaled')}")


if __name__ == "__main__":
    main()
