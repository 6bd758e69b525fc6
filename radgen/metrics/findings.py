"""Findings against image truth: does the report name what the image shows?

CE F1 (radgen.metrics.clinical) compares labels read from the generated report with labels read from
the reference *report*, and its micro average over 14 is dominated by No Finding, so a model that
writes the normal template scores well. Where the reference manifest carries ground-truth labels
(`labels.chexpert`: IU-Phantom always does, since the labels are what the phantom drew; IU X-Ray
has the human MeSH labels), this scores the generated report against them instead:

* prediction: radgen's CheXpert labeler on the generated report, uncertain counted as present
  (a report that says "possible effusion" has named the effusion);
* truth: the study's `labels.chexpert`, 1 or -1 = present; a study without the key is left out;
* observations: the 13 abnormal ones (No Finding excluded), averaged over those with at least
  `min_positives` (default 10) present in the scored studies, so one-off observations do not swing
  the macro average. Per-observation P/R/F1 are reported for the same set.

Keys: ``findings_abnormal_micro_{p,r,f1}``, ``findings_abnormal_macro_{p,r,f1}``,
``findings_{observation}_{p,r,f1}`` (observation in snake case). Computed from per-study TP/FP/FN
counts, so bootstrap intervals and paired tests work like every other corpus metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from radgen.labels.observations import CHEXPERT_14, NO_FINDING
from radgen.metrics import stats

ABNORMAL: tuple[str, ...] = tuple(name for name in CHEXPERT_14 if name != NO_FINDING)
PRESENT = (1, -1)


def observation_key(name: str) -> str:
    return name.lower().replace(" ", "_")


def _binary(labels: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([[1 if row.get(name) in PRESENT else 0 for name in ABNORMAL] for row in labels], dtype=np.int64).reshape(len(labels), len(ABNORMAL))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def _scores(summed: np.ndarray, counted: list[int]) -> dict[str, np.ndarray]:
    """(B, 3*K) summed [tp..., fp..., fn...] → metric arrays (B,)."""
    k = len(ABNORMAL)
    tp, fp, fn = summed[:, :k][:, counted], summed[:, k:2 * k][:, counted], summed[:, 2 * k:][:, counted]
    out: dict[str, np.ndarray] = {}
    p_obs, r_obs = _div(tp, tp + fp), _div(tp, tp + fn)
    f_obs = _div(2 * p_obs * r_obs, p_obs + r_obs)
    micro_p, micro_r = _div(tp.sum(1), (tp + fp).sum(1)), _div(tp.sum(1), (tp + fn).sum(1))
    out["findings_abnormal_micro_p"], out["findings_abnormal_micro_r"] = micro_p, micro_r
    out["findings_abnormal_micro_f1"] = _div(2 * micro_p * micro_r, micro_p + micro_r)
    if counted:
        out["findings_abnormal_macro_p"], out["findings_abnormal_macro_r"] = p_obs.mean(1), r_obs.mean(1)
        out["findings_abnormal_macro_f1"] = f_obs.mean(1)
    else:  # no observation has enough positives among these studies: nothing to average
        out["findings_abnormal_macro_p"] = out["findings_abnormal_macro_r"] = out["findings_abnormal_macro_f1"] = np.zeros(len(summed))
    for j, index in enumerate(counted):
        key = observation_key(ABNORMAL[index])
        out[f"findings_{key}_p"], out[f"findings_{key}_r"], out[f"findings_{key}_f1"] = p_obs[:, j], r_obs[:, j], f_obs[:, j]
    return out


def finding_statistic(predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], min_positives: int = 10
                      ) -> tuple[stats.Statistic, dict[str, Any]]:
    """Per-study counts of report labels vs ground-truth labels, and the protocol (which observations count)."""
    pred, ref = _binary(predicted), _binary(truth)
    counts = np.concatenate([pred & ref, pred & (1 - ref), (1 - pred) & ref], axis=1).astype(np.float64)
    positives = ref.sum(0)
    counted = [k for k in range(len(ABNORMAL)) if positives[k] >= min_positives]
    protocol = {
        "findings": "report labels (radgen CheXpert labeler on the generated report, uncertain = present) vs the reference "
                    "manifest's labels.chexpert (1 or -1 = present); No Finding excluded",
        "findings_observations": {ABNORMAL[k]: int(positives[k]) for k in counted},
        "findings_min_positives": min_positives,
    }
    return stats.Statistic(counts, lambda s: _scores(s, counted)), protocol


def finding_scores(predicted: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]], min_positives: int = 10) -> dict[str, float]:
    """Corpus scores (see the module docstring) of label dicts against ground-truth label dicts."""
    statistic, _ = finding_statistic(predicted, truth, min_positives)
    return statistic.corpus()
