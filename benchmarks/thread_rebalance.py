"""Does an automatic thread count follow the load? A long job's throughput before and after another job starts (or ends), with and without `rebalance_threads()`, side by side.

    PYTHONPATH=. python benchmarks/thread_rebalance.py --json thread_rebalance.json

Each run is a loop of fp32 matrix products (a stand-in for a training step's work) that calls
`radgen.threads.rebalance_threads()` between steps, as training, `fit-findings` and feature caching
do, after `configure_threads()` picked the count from the idle cores. `--load-at S`: a busy-loop
process (one core) starts S seconds in (`--event start`) or runs from the beginning and ends then
(`--event end`). The same is run with rebalancing off (the count picked at start, kept), so the
table shows what the re-count changes. Products per second are reported per 10-second window.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(seconds: float, load_at: float, event: str, rebalance: bool, size: int) -> dict:
    import torch

    from radgen import threads

    busy = None
    if event == "end":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    start_threads = threads.configure_threads()
    a = torch.randn(size, size)
    windows, count, started = [], 0, time.monotonic()
    window_start, changed = started, False
    try:
        while time.monotonic() - started < seconds:
            for _ in range(10):
                a @ a
            count += 10
            if rebalance:
                threads.rebalance_threads()
            now = time.monotonic()
            if now - window_start >= 10.0:
                windows.append({"until_s": round(now - started), "threads": torch.get_num_threads(),
                                "products_per_s": round(count / (now - window_start))})
                count, window_start = 0, now
            if not changed and now - started >= load_at:
                changed = True
                if event == "start":
                    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                elif busy is not None:
                    busy.kill()
                    busy = None
    finally:
        if busy is not None:
            busy.kill()
        threads.restore_threads()
    return {"rebalance": rebalance, "event": event, "load_at_s": load_at, "threads_at_start": start_threads, "windows": windows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--load-at", type=float, default=35.0, help="when the other job starts or ends (seconds)")
    parser.add_argument("--events", default="start,end", help="comma-separated: start (a job starts), end (one ends)")
    parser.add_argument("--size", type=int, default=512, help="the matrices' side")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from radgen.machine import cpu_summary

    results = [run(args.seconds, args.load_at, event, rebalance, args.size)
               for event in args.events.split(",") for rebalance in (False, True)]
    out = {"machine": {"cpu": cpu_summary()}, "seconds": args.seconds, "size": args.size, "runs": results}
    for result in results:
        label = f"another job {'starts' if result['event'] == 'start' else 'ends'} at {result['load_at_s']:.0f} s, " \
                f"rebalance {'on' if result['rebalance'] else 'off'}"
        print(f"{label}: " + ", ".join(f"{w['until_s']}s {w['threads']}t {w['products_per_s']}/s" for w in result["windows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
