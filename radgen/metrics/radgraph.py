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

What is honest here: running the RadGraph extraction model itself (a DyGIE++ model on AllenNLP) is
not implemented in radgen, and the `radgraph` package (0.1.18) cannot be wrapped: its vendored
AllenNLP calls tokenizer methods that transformers 5 removed. Annotate predictions and references
with that package in an environment with transformers<5 (offline, with its checkpoint) and pass
them with ``--radgraph-annotations FILE`` (JSONL rows
``{"study_id", "pred": {...}, "ref": {...}}``). ``--radgraph-weights`` is checked and then refused with
that instruction, never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from radgen.errors import DataError, WeightsError
from radgen.io import read_jsonl

LEVELS = ("simple", "partial", "complete")


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


def radgraph_scores(study_ids: list[str], hyps: list[str], refs: list[str], weights: str | os.PathLike | None = None, annotations: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Per-study RadGraph F1 at the three levels: {"radgraph_simple": (N,), ...}."""
    if annotations is None:
        if weights is None:
            raise WeightsError("RadGraph F1 needs --radgraph-annotations FILE (or a RadGraph checkpoint, see docs/metrics.md); radgen never downloads weights")
        path = Path(weights)
        if not path.exists():
            raise WeightsError(f"{path}: RadGraph checkpoint not found; expected the radgraph package's model archive (e.g. radgraph.tar.gz) at --radgraph-weights")
        raise WeightsError(
            f"{path}: running the RadGraph extraction model is not implemented in radgen; annotate predictions and references with the "
            "`radgraph` package offline (it needs transformers<5, so a separate environment) and pass --radgraph-annotations FILE "
            "(JSONL {study_id, pred, ref})"
        )
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
