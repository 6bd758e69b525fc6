"""RadGraph F1 (Jain et al. 2021; Delbrouck et al. 2022) from RadGraph annotations.

The three reward levels of the `radgraph` package, reimplemented on annotation dicts
``{"entities": {id: {"tokens", "label", "relations": [[relation, target_id], ...]}}}``:

* simple: set of (entity tokens, label) -- entity match
* partial: (tokens, label) for entities without relations, (tokens, label, True) for entities with
  at least one relation -- entity match that also requires "has a relation"
* complete: (tokens, label) for entities without relations, (tokens lower, label, relation, target
  tokens lower) per relation -- every relation must match

Per study: precision/recall over the candidate sets, F1; a study where either report has no entity
scores 0 (as the package does). Corpus score = mean F1.

Running the RadGraph extraction model (DyGIE++ on a vendored AllenNLP) is delegated to the
`radgraph` package, in ANOTHER Python: the package (0.1.18) calls tokenizer methods transformers 5
removed, and radgen needs transformers 5. With ``--radgraph-weights DIR`` (the extracted checkpoint
folder: config.json, vocabulary/, weights.th) radgen runs `radgraph_annotate.py` with
``--radgraph-python`` (default: this interpreter, which works only if it can run the package),
then scores the annotations here. Or annotate elsewhere and pass ``--radgraph-annotations FILE``
(JSONL rows ``{"study_id", "pred": {...}, "ref": {...}}``). Never a download.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from radgen.errors import DataError, WeightsError
from radgen.io import read_jsonl

LEVELS = ("simple", "partial", "complete")
ANNOTATE_SCRIPT = Path(__file__).with_name("radgraph_annotate.py")


def _entities(annotation: dict) -> dict:
    return (annotation or {}).get("entities") or {}


def candidates(annotation: dict, level: str) -> set:
    entities = _entities(annotation)
    out: set = set()
    for entity in entities.values():
        relations = entity.get("relations") or []
        if level == "simple" or not relations:
            out.add((entity["tokens"], entity["label"]))
        elif level == "partial":
            out.add((entity["tokens"], entity["label"], True))
        else:
            for relation, target in relations:
                out.add((entity["tokens"].lower(), entity["label"], relation, entities[str(target)]["tokens"].lower()))
    return out


def reward(hyp: dict, ref: dict, level: str) -> tuple[float, float, float]:
    """(F1, precision, recall) of one pair at `level`."""
    if level not in LEVELS:
        raise ValueError(f"unknown RadGraph reward level {level!r}; use one of {LEVELS}")
    if not _entities(hyp) or not _entities(ref):
        return 0.0, 0.0, 0.0
    h, r = candidates(hyp, level), candidates(ref, level)
    p = sum(1 for x in h if x in r) / len(h) if h else 0.0
    rec = sum(1 for x in r if x in h) / len(r) if r else 0.0
    f1 = 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
    return f1, p, rec


def annotate_texts(texts: list[str], weights: str | os.PathLike, python: str | None = None) -> dict[str, dict]:
    """{text: RadGraph annotation} for each distinct non-empty text, from the `radgraph` package run by
    `python` (radgraph_annotate.py, see the module docstring). Empty texts get no entry (scored 0)."""
    path = Path(weights)
    if not path.is_dir():
        raise WeightsError(f"{path}: RadGraph checkpoint folder not found; pass --radgraph-weights the extracted checkpoint "
                           "(a folder named radgraph or radgraph-xl with config.json, vocabulary/, weights.th)")
    distinct = [t for t in dict.fromkeys(text.strip() for text in texts) if t]
    if not distinct:
        return {}
    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="radgen-radgraph-") as tmp:
        source, target = Path(tmp) / "texts.jsonl", Path(tmp) / "annotations.jsonl"
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(distinct)), encoding="utf-8")
        command = [python, str(ANNOTATE_SCRIPT), "--model-dir", str(path), "--in", str(source), "--out", str(target)]
        returncode, lines = _run_with_progress(command, len(distinct), python)
        if returncode != 0:
            reason = lines[-1] if lines else f"exit status {returncode}"
            hint = "" if "radgraph_annotate:" in reason else (
                " (the radgraph package needs transformers<5: pass --radgraph-python of such an environment)")
            raise WeightsError(f"RadGraph annotation with {python} failed: {reason}{hint}")
        rows = read_jsonl(target)
    return {distinct[int(row["id"])]: row["annotation"] for row in rows}


def _run_with_progress(command: list[str], total: int, python: str) -> tuple[int, list[str]]:
    """Run the annotator, turning its "radgraph_annotate: i/n" stderr lines into a progress bar;
    returns (exit status, its other non-empty stderr lines) for the error message."""
    from tqdm import tqdm

    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except OSError as error:
        raise WeightsError(f"--radgraph-python {python}: cannot run it ({error}); pass the python of an environment with radgraph") from None
    lines: list[str] = []
    with tqdm(total=total, desc="radgraph", unit="report", disable=None, leave=False) as bar:
        for line in process.stderr:
            line = line.strip()
            done, _, of = line.removeprefix("radgraph_annotate: ").partition("/")
            if line.startswith("radgraph_annotate: ") and done.isdigit() and of.isdigit():
                bar.update(int(done) - bar.n)
            elif line:
                lines.append(line)
                del lines[:-50]  # the error is at the end
    return process.wait(), lines


def radgraph_scores(study_ids: list[str], hyps: list[str], refs: list[str], weights: str | os.PathLike | None = None,
                    annotations: str | os.PathLike | None = None, python: str | None = None) -> dict[str, np.ndarray]:
    """Per-study RadGraph F1 at the three levels: {"radgraph_simple": (N,), ...}, from annotations or
    from a checkpoint run by the `radgraph` package in `python` (see the module docstring)."""
    if annotations is None:
        if weights is None:
            raise WeightsError("RadGraph F1 needs --radgraph-weights DIR (the extracted checkpoint) or --radgraph-annotations FILE "
                               "(docs/metrics.md); radgen never downloads weights")
        by_text = annotate_texts(list(hyps) + list(refs), weights, python)
        rows = {sid: {"pred": by_text.get(h.strip(), {}), "ref": by_text.get(r.strip(), {})} for sid, h, r in zip(study_ids, hyps, refs)}
    else:
        rows = {str(row.get("study_id")): row for row in read_jsonl(annotations)}
    missing = [sid for sid in study_ids if sid not in rows]
    if missing:
        raise DataError(f"{annotations}: no RadGraph annotation for {len(missing)} studies (first: {', '.join(missing[:5])}); annotate every scored study")
    out = {f"radgraph_{level}": np.zeros(len(study_ids)) for level in LEVELS}
    for i, sid in enumerate(study_ids):
        row = rows[sid]
        for level in LEVELS:
            out[f"radgraph_{level}"][i] = reward(row.get("pred") or {}, row.get("ref") or {}, level)[0]
    return out
