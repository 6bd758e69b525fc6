"""Grounding scores on IU-Phantom, where every finding's place and side are known.

- Pointing game (Zhang et al. 2016): for each generated sentence that states an observation
  positively and whose observation was rendered in the explained image, a *hit* when the peak of
  the sentence's heatmap lies inside one of that observation's boxes (optionally within
  `tolerance` pixels, the original paper's 15 px). Accuracy = hits / trials.
- Hallucination rate: generated positive observations (labeler on the whole report, label 1,
  "No Finding" excluded) that are not in the exact labels `study.labels["chexpert"]`, over all
  generated positive observations.
- Laterality error rate: over generated sentences that state a present observation and name
  exactly one side ("left" or "right", not "bilateral"/"both"), the fraction whose side is not
  among the sides the observation was rendered on (`meta["phantom"]` marks, all views).
  Observations rendered without a side (cardiomegaly) are not counted.
"""

from __future__ import annotations

import re
from typing import Any

from radgen.labels.labeler import label_report
from radgen.labels.observations import NO_FINDING

_LEFT = re.compile(r"\bleft\b")
_RIGHT = re.compile(r"\bright\b")
_BOTH = re.compile(r"\b(bilateral|bilaterally|both)\b")


def positive_observations(text: str) -> set[str]:
    return {name for name, label in label_report(text).items() if label == 1 and name != NO_FINDING}


def stated_side(sentence: str) -> str | None:
    """'left' / 'right' when the sentence names exactly one side, else None."""
    text = sentence.lower()
    if _BOTH.search(text):
        return None
    left, right = bool(_LEFT.search(text)), bool(_RIGHT.search(text))
    return "left" if left and not right else "right" if right and not left else None


def in_box(point: tuple[int, int], box: list[int], tolerance: int = 0) -> bool:
    x, y = point
    x0, y0, x1, y1 = box
    return x0 - tolerance <= x <= x1 + tolerance and y0 - tolerance <= y <= y1 + tolerance


def truth_of(study: Any) -> tuple[set[str], list[dict[str, Any]]]:
    """(present observations, all rendered marks over all views) of a phantom study."""
    chexpert = study.labels.get("chexpert") or {}
    present = {name for name, value in chexpert.items() if value == 1 and name != NO_FINDING}
    marks = [mark for view_marks in study.meta.get("phantom", {}).get("images", {}).values() for mark in view_marks]
    return present, marks


def study_grounding(study: Any, report: str, sentences: list[dict[str, Any]], image_path: str | None,
                    tolerance: int = 0) -> dict[str, Any]:
    """Grounding of one report. sentences: [{"text", "peak": [x, y] or None}] in the explained
    image's pixels; image_path: its ImageRef.path (key of meta["phantom"]["images"]), None if stitched."""
    present, marks = truth_of(study)
    image_marks = study.meta.get("phantom", {}).get("images", {}).get(image_path, []) if image_path else []
    generated = positive_observations(report)
    pointing, laterality = [], []
    for index, sentence in enumerate(sentences):
        observations = positive_observations(sentence["text"])
        for observation in sorted(observations & present):
            boxes = [m["box"] for m in image_marks if m["observation"] == observation]
            if boxes and sentence.get("peak") is not None:
                hit = any(in_box(tuple(sentence["peak"]), box, tolerance) for box in boxes)
                pointing.append({"sentence": index, "observation": observation, "peak": list(sentence["peak"]), "boxes": boxes, "hit": hit})
            side = stated_side(sentence["text"])
            rendered = sorted({m["laterality"] for m in marks if m["observation"] == observation and m["laterality"] in ("left", "right")})
            if side is not None and rendered:
                laterality.append({"sentence": index, "observation": observation, "stated": side, "rendered": rendered,
                                   "error": side not in rendered})
    return {
        "study_id": study.study_id,
        "generated_positive": sorted(generated),
        "hallucinated": sorted(generated - present),
        "missed": sorted(present - generated),
        "pointing": pointing,
        "laterality": laterality,
    }


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def summarize(per_study: list[dict[str, Any]]) -> dict[str, Any]:
    """Micro-averaged pointing accuracy, hallucination rate and laterality error rate."""
    trials = [t for s in per_study for t in s["pointing"]]
    sides = [t for s in per_study for t in s["laterality"]]
    generated = sum(len(s["generated_positive"]) for s in per_study)
    hallucinated = sum(len(s["hallucinated"]) for s in per_study)
    return {
        "studies": len(per_study),
        "pointing_game": {"trials": len(trials), "hits": sum(t["hit"] for t in trials), "accuracy": _rate(sum(t["hit"] for t in trials), len(trials))},
        "hallucination": {"generated_positive": generated, "hallucinated": hallucinated, "rate": _rate(hallucinated, generated),
                          "reports_with_hallucination": sum(bool(s["hallucinated"]) for s in per_study)},
        "laterality": {"checked": len(sides), "errors": sum(t["error"] for t in sides), "rate": _rate(sum(t["error"] for t in sides), len(sides))},
    }
