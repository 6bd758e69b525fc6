"""Metrics on plain strings, and the short headline `radgen evaluate` prints.

    from radgen.metrics import score
    score(hyps=["no effusion ."], refs=["No pleural effusion."], metrics=["bleu", "rouge_l", "cider_d"])
    # {'bleu1': ..., 'bleu4': ..., 'rouge_l': ..., 'cider_d': ...}

`score` pairs hyps[i] with refs[i] and runs `radgen.metrics.evaluate` on them, so the numbers are
those of `radgen evaluate` on the same pairs (same cleaning, same defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radgen.errors import DataError

# What a reader wants first; the rest (CI, 36 clinical-efficacy variants, ...) stays in the files.
HEADLINE = (("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider_d", "CIDEr-D"))
# Abnormal-finding micro F1 against ground-truth labels (radgen.metrics.findings)
ABNORMAL_F1_KEY = "findings_abnormal_micro_f1"


def score(hyps: Sequence[str], refs: Sequence[str], metrics: Sequence[str] | None = None, section: str = "findings",
          full: bool = False, **options: Any) -> dict[str, Any]:
    """Corpus scores of generated report texts against reference texts, pair by pair.

    metrics: as `radgen evaluate --metrics` (default: the same default set). options: any
    `radgen.metrics.evaluate` keyword (cleaning, bootstrap (default 0 here), bertscore_model, ...).
    full=True returns evaluate's whole result (per-study rows, ci95, protocol) instead of the
    corpus dict. A pair whose reference is empty is not scored (as in `radgen evaluate`).
    """
    from radgen.data.study import Study
    from radgen.metrics.evaluate import evaluate

    for name, texts in (("hyps", hyps), ("refs", refs)):
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"score: {name} must be a list of strings (one report each), got {type(texts).__name__}")
    if len(hyps) != len(refs):
        raise DataError(f"score: {len(hyps)} hyps but {len(refs)} refs; pass one reference per generated report")
    if not hyps:
        raise DataError("score: no reports to score; pass non-empty hyps and refs")
    if section not in ("findings", "impression"):
        raise DataError(f"score: section must be findings or impression, got '{section}'")
    ids = [str(i) for i in range(len(hyps))]
    preds = [{"study_id": i, section: h} for i, h in zip(ids, hyps)]
    studies = [Study(study_id=i, sections={section: r}) for i, r in zip(ids, refs)]
    options.setdefault("bootstrap", 0)
    result = evaluate(preds, studies, section=section, metrics=metrics, **options)
    return result if full else dict(result["corpus"])


def abnormal_finding_f1(result: dict[str, Any]) -> float | None:
    """The abnormal-finding micro F1 of an evaluate result; None where the references had no truth labels."""
    value = result.get("corpus", {}).get(ABNORMAL_F1_KEY)
    return float(value) if isinstance(value, (int, float)) else None


def headline(result: dict[str, Any]) -> str:
    """One line: BLEU-4, METEOR, ROUGE-L, CIDEr-D and abnormal-finding F1 (those that were computed)."""
    corpus = result.get("corpus", {})
    parts = [f"{label} {corpus[key]:.4f}" for key, label in HEADLINE if key in corpus]
    f1 = abnormal_finding_f1(result)
    if f1 is not None:
        parts.append(f"abnormal-finding F1 {f1:.4f}")
    scope = f"{result.get('n_studies', '?')} studies, {result.get('section', '?')}"
    return f"{' | '.join(parts) if parts else 'no headline metric computed'} ({scope})"
