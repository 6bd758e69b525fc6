"""RadGraph F1 through radgen's bridge vs the `radgraph` package's own F1RadGraph, on IU report pairs.

    PYTHONPATH=. python benchmarks/radgraph_parity.py --radgraph-weights CKPT/radgraph \
        --radgraph-python ENV/bin/python [--pairs 300] [--json radgraph_parity.json]

ENV is an environment with `radgraph` 0.1.18 and transformers<5; CKPT a checkpoint the package
loads (the real one, or the random one `benchmarks/radgraph_tiny_checkpoint.py` builds). Pairs:
IU findings as references, the same reports shuffled (seed 0) as hypotheses, every 10th
hypothesis emptied (empty predictions happen, and score 0). The reference run is the package's
`F1RadGraph(reward_level="all")` in ENV; radgen's run is `radgen.metrics.radgraph.radgraph_scores`
with the checkpoint (annotation in ENV, rewards in radgen). The script asserts equal per-pair
rewards at all three levels and reports both wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from _iu import iu_studies  # noqa: E402

from radgen.metrics.radgraph import radgraph_scores  # noqa: E402

PACKAGE_F1 = """
import json, os, sys
import numpy as np
from radgraph import F1RadGraph
weights, pairs, out = sys.argv[1:4]
data = json.load(open(pairs))
scorer = F1RadGraph(reward_level="all", model_type=os.path.basename(weights), model_cache_dir=os.path.dirname(weights), cuda=-1)
mean, rewards, _, _ = scorer(refs=data["refs"], hyps=data["hyps"])
json.dump({"simple": [float(x) for x in rewards[0]], "partial": [float(x) for x in rewards[1]],
           "complete": [float(x) for x in rewards[2]]}, open(out, "w"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radgraph-weights", required=True)
    parser.add_argument("--radgraph-python", required=True)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    weights = os.path.abspath(args.radgraph_weights)

    refs = [s.findings.strip() for s in iu_studies() if s.findings.strip()][: args.pairs]
    hyps = list(refs)
    random.Random(0).shuffle(hyps)
    hyps = ["" if i % 10 == 0 else h for i, h in enumerate(hyps)]
    ids = [str(i) for i in range(len(refs))]

    with tempfile.TemporaryDirectory() as tmp:
        pairs, out = os.path.join(tmp, "pairs.json"), os.path.join(tmp, "package.json")
        with open(pairs, "w") as handle:
            json.dump({"refs": refs, "hyps": hyps}, handle)
        start = time.perf_counter()
        subprocess.run([args.radgraph_python, "-c", PACKAGE_F1, weights, pairs, out], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
        package_s = time.perf_counter() - start
        with open(out) as handle:
            package = json.load(handle)
    start = time.perf_counter()
    ours = radgraph_scores(ids, hyps, refs, weights=weights, python=args.radgraph_python)
    radgen_s = time.perf_counter() - start

    result = {"pairs": len(refs), "empty_hypotheses": sum(not h for h in hyps), "package_s": package_s, "radgen_s": radgen_s,
              "weights": weights, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for level in ("simple", "partial", "complete"):
        a, b = np.array(package[level]), ours[f"radgraph_{level}"]
        result[f"{level}_package_mean"], result[f"{level}_radgen_mean"] = float(a.mean()), float(b.mean())
        result[f"{level}_max_abs_diff"] = float(np.abs(a - b).max())
        result[f"{level}_nonzero_pairs"] = int((a > 0).sum())
    print(json.dumps(result, indent=2))
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, result)
    worst = max(result[f"{level}_max_abs_diff"] for level in ("simple", "partial", "complete"))
    if worst > 1e-9:
        sys.exit(f"radgraph_parity: per-pair rewards differ by up to {worst:.3g}")


if __name__ == "__main__":
    main()
