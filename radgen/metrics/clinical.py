"""Clinical efficacy (CE): agreement of CheXpert labels of generated vs reference reports.

Two conventions, never mixed in one column (the key names carry the convention):

* ``r2gen``: positive = 1; uncertain (-1), negative (0) and not mentioned count as 0 (R2Gen's CE code).
* ``chexbert``: positive and uncertain count as 1 (the CheXbert / CheXpert-U-ones convention).

For each convention: micro and macro precision / recall / F1 over the 14 observations and over the 5
(Cardiomegaly, Edema, Consolidation, Atelectasis, Pleural Effusion), plus example-based P/R/F1
(per study, then averaged; a study where both label sets are empty scores 0, like scikit-learn's
``average="samples"`` with ``zero_division=0``).

Everything is computed from per-study true/false positive/negative counts so bootstrap resamples are
a matrix product (radgen.metrics.stats).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radgen.labels.observations import CHEXPERT_5, CHEXPERT_14

CONVENTIONS = ("r2gen", "chexbert")
_INDEX_5 = [CHEXPERT_14.index(name) for name in CHEXPERT_5]


def binarize(labels: Sequence[dict], convention: str) -> np.ndarray:
    """(N, 14) 0/1 matrix from label dicts {observation: 1|0|-1|None}."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown CE convention {convention!r}; use one of {CONVENTIONS}")
    positive = (1,) if convention == "r2gen" else (1, -1)
    return np.array([[1 if row.get(name) in positive else 0 for name in CHEXPERT_14] for row in labels], dtype=np.int64)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return _safe_div(2 * p * r, p + r)


def per_study_counts(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 3, 14): true positives, false positives, false negatives per study and observation."""
    tp = pred & ref
    return np.stack([tp, pred & (1 - ref), (1 - pred) & ref], axis=1)


def ce_from_counts(counts: np.ndarray, example_stats: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """CE scores from summed counts; `counts` is (..., 3, 14) (batched for the bootstrap).

    `example_stats` (..., 4) holds summed per-study [precision, recall, f1, 1] for example-based scores.
    """
    tp, fp, fn = counts[..., 0, :], counts[..., 1, :], counts[..., 2, :]
    out: dict[str, np.ndarray] = {}
    for suffix, index in (("14", slice(None)), ("5", _INDEX_5)):
        t, f_p, f_n = tp[..., index], fp[..., index], fn[..., index]
        p = _safe_div(t.sum(-1), t.sum(-1) + f_p.sum(-1))
        r = _safe_div(t.sum(-1), t.sum(-1) + f_n.sum(-1))
        out[f"micro_p_{suffix}"], out[f"micro_r_{suffix}"], out[f"micro_f1_{suffix}"] = p, r, _f1(p, r)
        pc = _safe_div(t, t + f_p)
        rc = _safe_div(t, t + f_n)
        out[f"macro_p_{suffix}"], out[f"macro_r_{suffix}"], out[f"macro_f1_{suffix}"] = pc.mean(-1), rc.mean(-1), _f1(pc, rc).mean(-1)
    if example_stats is not None:
        n = example_stats[..., 3]
        out["example_p_14"] = _safe_div(example_stats[..., 0], n)
        out["example_r_14"] = _safe_div(example_stats[..., 1], n)
        out["example_f1_14"] = _safe_div(example_stats[..., 2], n)
    return out


def example_stats(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 4): per-study precision, recall, F1 over the 14 observations, and a 1 (for averaging)."""
    inter = (pred & ref).sum(1)
    p = _safe_div(inter, pred.sum(1))
    r = _safe_div(inter, ref.sum(1))
    return np.stack([p, r, _f1(p, r), np.ones(len(pred))], axis=1)


def ce_scores(pred_labels: Sequence[dict], ref_labels: Sequence[dict], prefix: str = "ce") -> tuple[dict[str, float], dict]:
    """Corpus CE scores for both conventions, keys ``{prefix}_{convention}_{stat}``, plus per-study arrays."""
    corpus: dict[str, float] = {}
    per_study: dict[str, np.ndarray] = {}
    for convention in CONVENTIONS:
        pred, ref = binarize(pred_labels, convention), binarize(ref_labels, convention)
        counts = per_study_counts(pred, ref)
        examples = example_stats(pred, ref)
        for key, value in ce_from_counts(counts.sum(0), examples.sum(0)).items():
            corpus[f"{prefix}_{convention}_{key}"] = float(value)
        per_study[f"{prefix}_{convention}_example_f1_14"] = examples[:, 2]
        per_study[f"_{prefix}_{convention}_counts"] = counts
        per_study[f"_{prefix}_{convention}_examples"] = examples
    return corpus, per_study
