"""How long should a drafted report be? One decoding-length sweep on a split, in one run.

    PYTHONPATH=. python benchmarks/decoding_length.py --model radgen/assets/default_model \
        --data work/default-model/phantom/manifest.jsonl --split val --min-new-tokens 0,30,40,50 [--max-new-tokens 90]

For each value the model decodes every study of `--split` greedily (its default decoding otherwise)
with no end of report allowed before that many tokens, and the reports are scored against the
references and the image truth (`radgen.metrics.evaluate`: abnormal-finding micro-F1, BLEU-4,
METEOR 1.5, ROUGE-L, CIDEr-D), with the share of distinct reports and the mean report length in
words. Pick the value on a validation split, never on the split you report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KEYS = ("findings_abnormal_micro_f1", "bleu4", "meteor", "rouge_l", "cider_d")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="radgen-small")
    parser.add_argument("--data", required=True, help="manifest with the split and its labels")
    parser.add_argument("--split", default="val")
    parser.add_argument("--min-new-tokens", default="0,30,40,50", help="comma-separated values to try")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="the length cap (default: the model's own)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from radgen.data.study import read_manifest
    from radgen.generate.decode import generate_reports, load_model, select_studies
    from radgen.metrics.evaluate import evaluate
    from radgen.pipeline import resolve_model

    model = load_model(resolve_model(args.model))
    studies = select_studies(read_manifest(args.data), args.split)
    results = []
    for value in (int(v) for v in args.min_new_tokens.split(",")):
        started = time.perf_counter()
        cap = {} if args.max_new_tokens is None else {"max_new_tokens": max(args.max_new_tokens, value)}
        rows = generate_reports(model, studies, root=Path(args.data).parent, progress=False, num_beams=1, min_new_tokens=value, **cap)
        corpus = evaluate(rows, studies, metrics=["findings", "bleu", "meteor", "cider_d", "rouge_l"])["corpus"]
        result = {"min_new_tokens": value, **{key: round(corpus[key], 4) for key in KEYS},
                  "distinct_reports": round(len({r["findings"] for r in rows}) / len(rows), 4),
                  "mean_words": round(sum(len(r["findings"].split()) for r in rows) / len(rows), 1),
                  "seconds": round(time.perf_counter() - started, 1)}
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(args.model), "split": args.split, "studies": len(studies),
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
