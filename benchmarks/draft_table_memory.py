"""How much memory can greedy decoding's draft table take? Fill one to its key budget and measure.

    PYTHONPATH=. python benchmarks/draft_table_memory.py [--order 8] [--max-keys 500000] [--json draft_table_memory.json]

A long-running server adds every report it writes to its `NgramDraft` until the table holds
`max_keys` n-grams. The worst case for memory is a table where every n-gram is new, so this
fills one with random 60-token "reports" over a 2,000-token vocabulary (nearly every key unique,
as in that worst case) and reports the growth of the process's resident memory (VmRSS from
/proc, Linux), per key and in total.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

from radgen.machine import cpu_summary
from radgen.models.speculative import NgramDraft


def resident_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=NgramDraft().max_order)
    parser.add_argument("--max-keys", type=int, default=NgramDraft().max_keys)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    before = resident_bytes()
    table = NgramDraft(max_order=args.order, max_keys=args.max_keys)
    rng = random.Random(0)
    reports = 0
    started = time.perf_counter()
    while len(table) < args.max_keys:
        size = len(table)
        table.add([rng.randrange(2000) for _ in range(60)])
        reports += 1
        if len(table) == size:  # the budget stopped learning
            break
    grown = resident_bytes() - before
    result = {"order": args.order, "max_keys": args.max_keys, "keys": len(table), "reports_added": reports,
              "rss_growth_mb": round(grown / 1e6, 1), "bytes_per_key": round(grown / max(len(table), 1)),
              "seconds": round(time.perf_counter() - started, 1), "cpu": cpu_summary(),
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(result))
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
