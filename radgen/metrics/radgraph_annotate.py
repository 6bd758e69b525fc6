"""Annotate report texts with the `radgraph` package: a standalone script for ANOTHER Python.

    PYTHON_WITH_RADGRAPH radgraph_annotate.py --model-dir CACHE/radgraph --in texts.jsonl --out annotations.jsonl

Why a separate script: the RadGraph extraction model (DyGIE++ on a vendored AllenNLP) ships only
with the `radgraph` package, whose code calls tokenizer methods that transformers 5 removed, while
radgen needs transformers 5. radgen therefore runs this file with the interpreter of an environment
that has `radgraph` and transformers<5 (`--radgraph-python`) and scores the annotations itself
(radgen.metrics.radgraph). It imports nothing from radgen, so that environment needs only `radgraph`.

--model-dir is the folder the package itself extracts a checkpoint into: named radgraph,
radgraph-xl, echograph or modern-radgraph-xl, holding config.json, vocabulary/ and weights.th. The
package downloads only when that folder is missing or empty, which this script checks first. The
BERT named in config.json must be a local path or already in the HF cache (HF_HUB_OFFLINE=1).

Input rows {"id", "text"}; output rows {"id", "annotation": {"entities": {...}}} in input order,
written to a temporary file and renamed when complete. Empty texts get no entities (the
package's F1RadGraph scores such pairs 0 without running the model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Python puts this script's folder first on sys.path, and radgen's own radgraph.py lives there:
# drop it so that `import radgraph` finds the package.
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

MODEL_TYPES = ("radgraph", "radgraph-xl", "echograph", "modern-radgraph-xl")
REQUIRED = ("config.json", "vocabulary", "weights.th")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--in", dest="inp", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model_dir = os.path.abspath(args.model_dir)
    model_type = os.path.basename(model_dir.rstrip(os.sep))
    if model_type not in MODEL_TYPES:
        sys.exit(f"radgraph_annotate: {model_dir}: the checkpoint folder must be named one of {', '.join(MODEL_TYPES)} "
                 "(the radgraph package picks the model by that name); rename it")
    missing = [name for name in REQUIRED if not os.path.exists(os.path.join(model_dir, name))]
    if missing:
        sys.exit(f"radgraph_annotate: {model_dir}: missing {', '.join(missing)}; expected the extracted checkpoint "
                 "(config.json, vocabulary/, weights.th); radgen never downloads it")
    try:
        from radgraph import RadGraph
    except ImportError as error:
        sys.exit(f"radgraph_annotate: {sys.executable} cannot import radgraph ({error}); pass --radgraph-python of an "
                 "environment with `pip install radgraph 'transformers<5'`")

    with open(args.inp, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    model = RadGraph(model_type=model_type, model_cache_dir=os.path.dirname(model_dir), cuda=-1)
    annotations: dict[int, dict] = {}
    texts = [(i, row["text"]) for i, row in enumerate(rows) if row["text"].strip()]
    for start in range(0, len(texts), args.batch_size):
        chunk = texts[start:start + args.batch_size]
        result = model([text for _, text in chunk])
        for k, (i, _) in enumerate(chunk):
            annotations[i] = {"entities": result[str(k)].get("entities", {})}
        print(f"radgraph_annotate: {min(start + args.batch_size, len(texts))}/{len(texts)}", file=sys.stderr, flush=True)
    partial = args.out + ".partial"
    with open(partial, "w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            handle.write(json.dumps({"id": row["id"], "annotation": annotations.get(i, {"entities": {}})}) + "\n")
    os.replace(partial, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
