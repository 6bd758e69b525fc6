"""Seconds a server batch takes, group by group, with and without the known-words rule.

    PYTHONPATH=. python benchmarks/server_batches.py --manifest work/default-model/phantom/manifest.jsonl \
        [--model radgen-small] [--split test] [--group 20] [--groups 5] [--passes 2] [--json server_batches.json]

Loads the model as `radgen serve` does (`ReportService`, decoder dtype auto), prepares the frontal
image and indication of the split's first `--group` x `--groups` studies as uploads, sends one
warm-up upload, then runs `ReportService.run_batch` on each group of `--group` studies in turn,
`--passes` times over, once with the model's known-words rule and once without
(`radgen.models.lexicon`; which goes first alternates by group). Every batch starts from the shipped
draft table (as a fresh server's first round does), so the pair is fair. Prints and writes the seconds per
group and setting, and the words of each group's reports. Why: `radgen serve`'s p95 is the
slowest round of callers, and one group's content (a report whose made-up words left the shortlist)
made one round slow (docs/benchmarks.md, Performance, "Serving: ...").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import manifest_requests  # noqa: E402

from radgen.io import atomic_write_json  # noqa: E402
from radgen.machine import cpu_summary  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from radgen.generate.decode import seed_draft_table
    from radgen.pipeline import resolve_model
    from radgen.serve.inference import ReportService

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--model", default=None, help="a shipped name, model folder or run folder (default: radgen-small)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--group", type=int, default=20, help="uploads a server batch (radgen serve's --max-batch)")
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not (1 <= args.group <= 64 and 1 <= args.groups <= 25 and 1 <= args.passes <= 10):
        parser.error("--group 1..64, --groups 1..25, --passes 1..10")

    folder = resolve_model(args.model)
    service = ReportService.from_directory(folder)
    requests = manifest_requests(args.manifest, args.split, limit=args.group * args.groups)
    uploads = [service.prepare(data, indication=indication) for data, indication in requests]
    service.run_batch([service.prepare(requests[0][0])])  # first-call allocations, untimed
    rows = []
    for n in range(args.passes):
        for group in range(args.groups):
            batch = uploads[group * args.group:(group + 1) * args.group]
            if not batch:
                break
            for known in ((True, False) if (group + n) % 2 == 0 else (False, True)):
                service.model.report_draft.clear()  # every batch starts from the shipped draft table: a fair pair
                seed_draft_table(service.model, folder)
                service.generate_options["known_words"] = known
                start = time.perf_counter()
                reports = service.run_batch(batch)
                rows.append({"pass": n, "group": group, "known_words": known, "seconds": round(time.perf_counter() - start, 3),
                             "words": sum(len(r["findings"].split()) for r in reports)})
                print(json.dumps(rows[-1]), flush=True)
    totals = {str(known): round(sum(r["seconds"] for r in rows if r["known_words"] == known), 2) for known in (True, False)}
    out = {"rows": rows, "total_seconds_by_known_words": totals, "split": args.split, "group": args.group, "model": str(folder),
           "machine": {"cpu": cpu_summary()}, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "command": "PYTHONPATH=. python benchmarks/server_batches.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(totals))
    if args.json:
        atomic_write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
