"""Confidence of generated reports and its calibration.

Definitions (docs/explain.md repeats them):

- Token log-probabilities are the decoder's `log p(token | image, previous tokens)` for the tokens
  it emitted, as `ReportGenerator.generate` returns them (raw logits; for beam search HF's beam
  scores, which equal the raw log-probabilities unless a repetition penalty rescales them).
- Sentence confidence = geometric mean of its tokens' probabilities, `exp(mean log p)`; report
  confidence the same over all of the report's tokens. The geometric mean does not fall with
  length the way the joint probability does, so long and short sentences are comparable.
- A *confidence temperature* T rescales the mean log-probability, `exp(mean log p / T)`; T > 1
  softens over-confident models. It is fitted on validation predictions (`fit_confidence_temperature`)
  and applied at generation with `radgen generate --temperature-scale`. It changes reported
  confidences only, never the decoded text.
- A sentence is *correct* when every CheXpert observation it states (rule-based labeler, positive
  or negative; uncertain mentions and "No Finding" are ignored) agrees with the reference labels: a
  positive statement needs the observation present in the reference, a negative one needs it
  absent. Sentences that state no observation have no defined correctness and are left out.
- Reference labels: the study's `labels["chexpert"]` when present (IU-Phantom: the exact rendered
  findings; IU X-Ray: its human MeSH labels), else the labeler on the reference report text
  (R2Gen convention: positive = present; negative, uncertain or unmentioned = absent).
- ECE (Guo et al. 2017): `sum_b n_b / N * |accuracy_b - confidence_b|` over equal-width bins
  `((b-1)/M, b/M]` (a confidence of exactly 0 goes to the first bin).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from radgen.labels.labeler import label_report
from radgen.labels.observations import CHEXPERT_14, NO_FINDING

# A sentence ends at "." or "!" or "?" that is not a decimal point (same rule as the labeler).
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?!\d)")


def geometric_mean_probability(logprobs: Sequence[float], temperature: float = 1.0) -> float | None:
    """exp(mean(logprobs) / temperature); None for no tokens."""
    if not logprobs:
        return None
    return math.exp(sum(logprobs) / len(logprobs) / temperature)


@dataclass
class SentenceSpan:
    text: str
    start: int  # first token index (inclusive)
    end: int  # last token index (exclusive)


def sentence_spans(tokenizer: Any, token_ids: Sequence[int]) -> list[SentenceSpan]:
    """Split a generated token sequence into sentences, keeping which tokens belong to each.

    Each token is assigned to the sentence that contains its last character in the decoded text
    (char offsets come from decoding growing prefixes, which is exact for byte-level BPE and
    SentencePiece alike). Sentences with no letters or digits (a stray ".") are merged into the
    previous sentence so every token belongs to some sentence.
    """
    ids = list(token_ids)
    if not ids:
        return []
    ends = [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    boundaries = [m.end() for m in _SENTENCE_END.finditer(text)]
    spans: list[SentenceSpan] = []
    start_token, start_char, b = 0, 0, 0
    for i, end in enumerate(ends):
        while b < len(boundaries) and boundaries[b] <= start_char:
            b += 1
        if b < len(boundaries) and end >= boundaries[b]:  # token i closes a sentence
            spans.append(SentenceSpan(text[start_char:end].strip(), start_token, i + 1))
            start_token, start_char = i + 1, end
    if start_token < len(ids):
        spans.append(SentenceSpan(text[start_char:].strip(), start_token, len(ids)))
    merged: list[SentenceSpan] = []
    for span in spans:
        if merged and not re.search(r"[A-Za-z0-9]", span.text):
            merged[-1] = SentenceSpan((merged[-1].text + " " + span.text).strip(), merged[-1].start, span.end)
        else:
            merged.append(span)
    if len(merged) > 1 and not re.search(r"[A-Za-z0-9]", merged[0].text):
        first = merged.pop(0)
        merged[0] = SentenceSpan((first.text + " " + merged[0].text).strip(), first.start, merged[0].end)
    return merged


def sentence_confidences(tokenizer: Any, token_ids: Sequence[int], token_logprobs: Sequence[float],
                         temperature: float = 1.0) -> list[dict[str, Any]]:
    """[{"text", "confidence", "mean_logprob", "token_span": [start, end)}] per generated sentence."""
    rows = []
    for span in sentence_spans(tokenizer, token_ids):
        values = list(token_logprobs[span.start: span.end])
        mean = sum(values) / len(values) if values else None
        rows.append({"text": span.text, "confidence": geometric_mean_probability(values, temperature),
                     "mean_logprob": mean, "token_span": [span.start, span.end]})
    return rows


# -- correctness ------------------------------------------------------------------------------------

def reference_presence(study_labels: dict[str, Any] | None, reference_text: str | None) -> dict[str, bool | None]:
    """Observation → present? from the study's chexpert labels if any, else the labeler on the text.

    With labels["chexpert"] (exact or human labels) absent observations are absent. From text, a
    positive mention is present, uncertain is unknown (None), everything else absent.
    """
    chexpert = (study_labels or {}).get("chexpert")
    if isinstance(chexpert, dict) and chexpert:
        return {name: chexpert.get(name) == 1 for name in CHEXPERT_14}
    labels = label_report(reference_text or "")
    return {name: (None if labels.get(name) == -1 else labels.get(name) == 1) for name in CHEXPERT_14}


def sentence_correct(sentence: str, reference: dict[str, bool | None]) -> bool | None:
    """True/False if the sentence states at least one observation we can check, else None."""
    verdicts = []
    for name, label in label_report(sentence).items():
        if name == NO_FINDING or label not in (0, 1):
            continue  # "No Finding" is a whole-report judgement; uncertain mentions assert nothing
        truth = reference.get(name)
        if truth is None:
            continue
        verdicts.append(truth == (label == 1))
    return all(verdicts) if verdicts else None


# -- calibration ------------------------------------------------------------------------------------

@dataclass
class CalibrationBin:
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean confidence in the bin
    accuracy: float | None  # fraction correct in the bin


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[CalibrationBin]:
    if len(confidences) != len(correct):
        raise ValueError("confidences and correct must have the same length")
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        index = max(0, min(n_bins - 1, math.ceil(c * n_bins) - 1))  # bins ((b-1)/M, b/M]; 0 → first
        members[index].append(i)
    bins = []
    for b, idx in enumerate(members):
        conf = sum(confidences[i] for i in idx) / len(idx) if idx else None
        acc = sum(bool(correct[i]) for i in idx) / len(idx) if idx else None
        bins.append(CalibrationBin(b / n_bins, (b + 1) / n_bins, len(idx), conf, acc))
    return bins


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    total = len(confidences)
    if total == 0:
        return float("nan")
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in reliability_bins(confidences, correct, n_bins) if b.count)


def binary_nll(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    eps = 1e-12
    return -sum(math.log(max(c, eps)) if y else math.log(max(1 - c, eps)) for c, y in zip(confidences, correct)) / max(1, len(correct))


def fit_confidence_temperature(mean_logprobs: Sequence[float], correct: Sequence[bool],
                               bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """T minimising the NLL of correctness under confidence exp(mean_logprob / T).

    One parameter, so a dense grid over log T followed by golden-section refinement is exact
    enough and needs no optimiser (the NLL is smooth and, in practice, unimodal in log T).
    """
    if not mean_logprobs:
        return 1.0

    def loss(log_t: float) -> float:
        t = math.exp(log_t)
        return binary_nll([math.exp(m / t) for m in mean_logprobs], correct)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = [lo + (hi - lo) * i / 200 for i in range(201)]
    best = min(range(len(grid)), key=lambda i: loss(grid[i]))
    a, b = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    return math.exp((a + b) / 2)


def reliability_diagram(bins: list[CalibrationBin], path: str, title: str = "Sentence confidence") -> None:
    """Bar chart of accuracy per confidence bin against the diagonal, written atomically as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radgen.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    width = bins[0].upper - bins[0].lower if bins else 0.1
    centers = [b.lower + width / 2 for b in bins]
    ax.bar(centers, [b.accuracy or 0.0 for b in bins], width=width * 0.95, color="#4c72b0", edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for center, b in zip(centers, bins):
        if b.count:
            ax.text(center, min(0.97, (b.accuracy or 0) + 0.02), str(b.count), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="fraction correct", title=title)
    ax.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def load_temperature(value: str | float | None) -> float:
    """A float, or a calib.json written by `radgen calibrate` (its "temperature")."""
    import json
    from pathlib import Path

    from radgen.errors import ConfigError

    if value is None:
        return 1.0
    try:
        t = float(value)
    except (TypeError, ValueError):
        path = Path(str(value))
        if not path.is_file():
            raise ConfigError(f"--temperature-scale {value}: not a number and no such file; pass e.g. 1.3 or a calib.json from `radgen calibrate`") from None
        try:
            t = float(json.loads(path.read_text())["temperature"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}: no numeric 'temperature' key; pass a calib.json written by `radgen calibrate`") from None
    if not t > 0:
        raise ConfigError(f"--temperature-scale must be > 0, got {t}")
    return t


def calibration_samples(preds: list[dict], studies: dict[str, Any], section: str = "findings") -> tuple[list[float], list[bool], dict[str, int]]:
    """(mean log-probability, correct) for every checkable generated sentence with a reference study."""
    from radgen.data.text import select_section

    means, correct = [], []
    counts = {"predictions": len(preds), "matched": 0, "sentences": 0, "checkable": 0}
    for row in preds:
        study = studies.get(str(row.get("study_id")))
        if study is None:
            continue
        counts["matched"] += 1
        reference = reference_presence(study.labels, select_section(study.sections, section))
        for sentence in row.get("sentences") or []:
            counts["sentences"] += 1
            verdict = sentence_correct(sentence.get("text", ""), reference)
            if verdict is None or sentence.get("mean_logprob") is None:
                continue
            counts["checkable"] += 1
            means.append(float(sentence["mean_logprob"]))
            correct.append(verdict)
    return means, correct, counts


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def calibrate(preds: list[dict], studies: list[Any], out_json: str, section: str = "findings", n_bins: int = 10,
              png: str | None = None) -> dict[str, Any]:
    """ECE + reliability diagram of sentence confidence; fit the confidence temperature; write calib.json."""
    from radgen.errors import DataError
    from radgen.io import atomic_write_json

    by_id = {study.study_id: study for study in studies}
    means, correct, counts = calibration_samples(preds, by_id, section)
    if counts["matched"] == 0:
        raise DataError("no prediction's study_id is in the reference manifest; pass the manifest the predictions were generated from")
    if not means:
        raise DataError(f"none of {counts['sentences']} generated sentences states a CheXpert observation; nothing to calibrate")
    raw = [math.exp(m) for m in means]
    temperature = fit_confidence_temperature(means, correct)
    scaled = [math.exp(m / temperature) for m in means]
    bins = reliability_bins(raw, correct, n_bins)
    scaled_bins = reliability_bins(scaled, correct, n_bins)
    result = {
        "temperature": temperature,
        "definition": "sentence confidence = exp(mean token log-prob / T); correct = its labeled observations agree with the reference",
        "n_bins": n_bins,
        **counts,
        "accuracy": sum(correct) / len(correct),
        "ece": expected_calibration_error(raw, correct, n_bins),
        "ece_scaled": expected_calibration_error(scaled, correct, n_bins),
        # seed 003 compares the confidence of true and false positive statements
        "mean_confidence_correct": _mean([c for c, y in zip(raw, correct) if y]),
        "mean_confidence_incorrect": _mean([c for c, y in zip(raw, correct) if not y]),
        "nll": binary_nll(raw, correct),
        "nll_scaled": binary_nll(scaled, correct),
        "bins": [vars(b) for b in bins],
        "bins_scaled": [vars(b) for b in scaled_bins],
    }
    png = png or str(out_json).rsplit(".", 1)[0] + ".png"
    reliability_diagram(bins, png, title=f"Sentence confidence (ECE {result['ece']:.3f}, n={len(raw)})")
    reliability_diagram(scaled_bins, png.rsplit(".", 1)[0] + "_scaled.png",
                        title=f"After T={temperature:.2f} (ECE {result['ece_scaled']:.3f})")
    result["png"], result["png_scaled"] = png, png.rsplit(".", 1)[0] + "_scaled.png"
    atomic_write_json(out_json, result)
    return result
