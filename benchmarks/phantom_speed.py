"""IU-Phantom rendering speed: render every IU X-Ray study (PA + lateral) through the real CLI path.

    PYTHONPATH=. python benchmarks/phantom_speed.py [--limit N] [--size 512] [--workers 2] [--out DIR]

Builds the manifest from ../shared/data/iu_xray_reports/indiana_reports.csv (all 2,902 studies,
see phantom_common.py), then runs `radgen data phantom` (tqdm + process pool, PNG + manifest
writes included) and prints one JSON line with wall time, seconds per image and per image-core,
and the CPU seconds spent (own + worker processes), which stay meaningful when other jobs share
the cores (the 1-minute load average before and after is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.phantom_common import DEFAULT_CSV, iu_studies  # noqa: E402
from radgen.data.phantom import cli  # noqa: E402
from radgen.data.study import write_manifest  # noqa: E402
from radgen.machine import cpu_summary


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the renders here (default: a temp dir)")
    args = parser.parse_args()

    studies = iu_studies(args.csv)[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "phantom"
        source = Path(tmp) / "iu.jsonl"
        write_manifest(source, studies)
        argv = ["phantom", "--manifest", str(source), "--out", str(out), "--size", str(args.size), "--workers", str(args.workers)]
        top = argparse.ArgumentParser()
        cli.register(top.add_subparsers())
        load_before = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        parsed = top.parse_args(argv)
        parsed.func(parsed)
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        load_after = os.getloadavg()[0]
    images = 2 * len(studies)
    print(json.dumps({
        "studies": len(studies), "images": images, "size": args.size, "workers": args.workers,
        "wall_s": round(wall, 1), "s_per_image": round(wall / images, 4),
        "s_per_image_core": round(wall * args.workers / images, 4),
        # CPU seconds actually spent (this process + workers): the cost without other load.
        "cpu_s": round(cpu, 1), "cpu_s_per_image": round(cpu / images, 4),
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
        "cpu": cpu_summary(), "cores_visible": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
