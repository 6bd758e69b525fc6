"""Which draft table order, CPU pass budget and draft length should drafted decoding use? One sweep, one process.

    PYTHONPATH=. python benchmarks/draft_settings.py --manifest work/default-model/phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split val] [--limit 96] [--batch-sizes 32,1]
        [--orders 4,8,12] [--budgets 160] [--draft-tokens 8,16,24] [--repeats 2] [--threads 2] [--json draft_settings.json]

For each (batch size, pass budget, order, draft length) the model decodes the same studies with its default
greedy settings (as `benchmarks/drafted_decoding.py` does) from a draft table of that order seeded
with the model's own draft_reports.txt, and reports the drafted passes (deterministic: the text
does not depend on these settings, only the number of passes) and the seconds per report (noisy:
~10% run to run on a shared 2-core VM, so every combination runs `--repeats` times, interleaved).
The budget is `speculative.CPU_PASS_TOKENS` (the drafted tokens a CPU pass shares among its rows);
the draft length is `generate.draft_tokens` (the most a row drafts per pass: what sets a batch-1 pass's width).
Choose on a validation split, never on the split you report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drafted_decoding import count_passes, greedy_settings, run, study_parser  # noqa: E402

from radgen.machine import cpu_summary


def main(argv: list[str] | None = None) -> list[dict]:
    parser = study_parser(__doc__.splitlines()[0], split="val", batch_sizes="32,1")
    parser.add_argument("--orders", default="4,8,12", help="draft table orders (NgramDraft max_order) to try")
    parser.add_argument("--budgets", default=None, help="CPU pass budgets to try (default: the current CPU_PASS_TOKENS)")
    parser.add_argument("--draft-tokens", default=None, help="draft lengths to try (default: the recipe's generate.draft_tokens)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from radgen.data.study import read_manifest
    from radgen.generate.decode import DRAFT_REPORTS_FILE, generation_dataset, load_model, study_batches
    from radgen.models import speculative

    model = load_model(args.model)
    seed_file = Path(args.model) / DRAFT_REPORTS_FILE
    seed = [line.strip() for line in seed_file.read_text(encoding="utf-8").splitlines() if line.strip()] if seed_file.is_file() else []
    settings, recipe_draft_tokens = greedy_settings(model)
    lengths = [int(k) for k in args.draft_tokens.split(",")] if args.draft_tokens else [recipe_draft_tokens]
    studies = [s for s in read_manifest(args.manifest) if s.split == args.split][: args.limit]
    dataset = generation_dataset(model, studies, os.path.dirname(os.path.abspath(args.manifest)), "findings")
    counter = count_passes(model)
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else [speculative.CPU_PASS_TOKENS]
    orders = [int(o) for o in args.orders.split(",")]
    load_before = os.getloadavg()
    rows: list[dict] = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        batches = list(study_batches(dataset, batch_size))
        first: list[str] | None = None
        for repeat in range(args.repeats):
            for budget in budgets:
                for order in orders:
                    for draft_tokens in lengths:
                        speculative.CPU_PASS_TOKENS = budget
                        model.report_draft = speculative.NgramDraft(max_order=order)
                        model.add_draft_reports(seed)
                        result = run(model, batches, draft_tokens, counter, settings)
                        first = result["texts"] if first is None else first
                        # the same text from every setting in fp32; in bf16 the pass width may flip a near-tie
                        row = {"batch_size": batch_size, "budget": budget, "order": order, "draft_tokens": draft_tokens, "repeat": repeat,
                               "identical_to_first": sum(a == b for a, b in zip(first, result["texts"])),
                               **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items() if k != "texts"}}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    if args.json:
        info = {"model": args.model, "split": args.split, "studies": len(studies), "recipe_draft_tokens": recipe_draft_tokens, "threads": args.threads,
                "torch": torch.__version__, "cpu": cpu_summary(), "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
