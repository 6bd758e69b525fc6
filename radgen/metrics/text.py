"""BLEU-1..4, ROUGE-L and CIDEr-D, numerically equal to pycocoevalcap 1.2 and several times faster.

Why reimplement: pycocoevalcap recounts every reference's n-grams once per metric (and CIDEr-D
re-vectorizes each reference inside its inner loop), computes LCS with a pure-Python O(n*m) table,
and exposes no per-study sufficient statistics, which bootstrap confidence intervals need. Here each
text is split and n-gram counted once, shared by BLEU and CIDEr-D; ROUGE-L uses a bit-parallel LCS
(Hyyrö 2004) on Python integers. Every formula below mirrors pycocoevalcap, quirks included, so the
scores agree to floating-point rounding (checked by tests/metrics/test_text_parity.py):

* BLEU: corpus level, the "closest" reference length per segment (ties -> shorter), the 1e-15 / 1e-9
  smoothing constants and the brevity penalty on the corpus totals. Per-study BLEU is pycocoevalcap's
  per-image list (sentence BLEU with the same constants).
* ROUGE-L: tokens from ``str.split(" ")`` (so "" is one empty token), beta 1.2, max precision and max
  recall over references, corpus score = mean over studies.
* CIDEr-D: document frequency over the references of the evaluated corpus, idf = log(N) - log(max(1, df)),
  clipped tf-idf ("min(hyp, ref) * ref"), gaussian length penalty with sigma 6 where "length" is the
  number of *bigrams* (pycocoevalcap's own quirk), mean over n = 1..4, averaged over references, x10.

Inputs are already-tokenized strings (tokens separated by single spaces), as pycocoevalcap expects.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

MAX_N = 4
_TINY = 1e-15  # pycocoevalcap's constants, so a zero count gives 0 and never divides by zero
_SMALL = 1e-9


def ngram_counts(tokens: list[str], n: int = MAX_N) -> list[Counter]:
    """N-gram counts per order: ``result[k]`` counts the (k+1)-grams of `tokens`."""
    return [Counter(zip(*(tokens[i:] for i in range(k)))) for k in range(1, n + 1)]


@dataclass
class _Text:
    tokens: list[str]
    counts: list[Counter]


def _prepare(texts: list[str], cache: dict[str, _Text]) -> list[_Text]:
    """Split and count each distinct text once (generated reports repeat a lot: "no acute ...")."""
    out = []
    for text in texts:
        item = cache.get(text)
        if item is None:
            tokens = text.split()
            item = cache[text] = _Text(tokens, ngram_counts(tokens))
        out.append(item)
    return out


# ---------------------------------------------------------------- BLEU


@dataclass
class BleuStats:
    """Per-study sufficient statistics of corpus BLEU: sums of these over studies give the corpus score."""

    correct: np.ndarray  # (N, 4) clipped n-gram matches
    guess: np.ndarray  # (N, 4) hypothesis n-grams
    testlen: np.ndarray  # (N,)
    reflen: np.ndarray  # (N,) closest reference length


def bleu_from_totals(correct: np.ndarray, guess: np.ndarray, testlen: np.ndarray, reflen: np.ndarray) -> np.ndarray:
    """BLEU-1..4 from summed statistics; works on (4,) or batched (..., 4) arrays (bootstrap)."""
    correct = np.asarray(correct, dtype=np.float64)
    guess = np.asarray(guess, dtype=np.float64)
    precisions = (correct + _TINY) / (guess + _SMALL)
    cumulative = np.cumprod(precisions, axis=-1)
    bleus = cumulative ** (1.0 / np.arange(1, MAX_N + 1))
    ratio = (np.asarray(testlen, dtype=np.float64) + _TINY) / (np.asarray(reflen, dtype=np.float64) + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, 1e-300)), 1.0)
    return bleus * np.expand_dims(penalty, -1)


def _bleu_stats(hyps: list[_Text], refs: list[list[_Text]]) -> BleuStats:
    n_items = len(hyps)
    correct = np.zeros((n_items, MAX_N), dtype=np.int64)
    guess = np.zeros((n_items, MAX_N), dtype=np.int64)
    testlen = np.zeros(n_items, dtype=np.int64)
    reflen = np.zeros(n_items, dtype=np.int64)
    for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
        length = len(hyp.tokens)
        testlen[i] = length
        # "closest": smallest |ref - hyp| length difference, ties broken towards the shorter reference.
        reflen[i] = min((abs(len(r.tokens) - length), len(r.tokens)) for r in ref_list)[1]
        for k in range(MAX_N):
            guess[i, k] = max(0, length - k)
            hyp_counts = hyp.counts[k]
            if len(ref_list) == 1:
                ref_counts = ref_list[0].counts[k]
                correct[i, k] = sum(min(c, ref_counts[g]) for g, c in hyp_counts.items() if g in ref_counts)
            else:
                maxref: Counter = Counter()
                for r in ref_list:
                    maxref |= r.counts[k]
                correct[i, k] = sum(min(c, maxref[g]) for g, c in hyp_counts.items() if g in maxref)
    return BleuStats(correct, guess, testlen, reflen)


def _sentence_bleu(stats: BleuStats) -> np.ndarray:
    """(N, 4) per-study BLEU, pycocoevalcap's per-image list."""
    return bleu_from_totals(stats.correct, stats.guess, stats.testlen, stats.reflen)


# ---------------------------------------------------------------- ROUGE-L


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over `a` (Hyyrö 2004): O(len(b)) big-int ops."""
    if not a or not b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        match = masks.get(token)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_pair(hypothesis: str, references: list[str], beta: float = 1.2) -> float:
    """ROUGE-L F (pycocoevalcap): max precision and max recall over references."""
    cand = hypothesis.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref = reference.split(" ")
        lcs = lcs_length(ref, cand)
        precisions.append(lcs / len(cand))
        recalls.append(lcs / len(ref))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / (r + beta**2 * p)


# ---------------------------------------------------------------- CIDEr-D


def _cider_vectors(counts: list[Counter], idf: dict, log_n: float) -> tuple[list[dict], list[float]]:
    vectors, norms = [], []
    for order in counts:
        vec = {g: tf * idf.get(g, log_n) for g, tf in order.items()}
        vectors.append(vec)
        norms.append(math.sqrt(sum(x * x for x in vec.values())))
    return vectors, norms


def _cider_scores(hyps: list[_Text], refs: list[list[_Text]], sigma: float = 6.0) -> np.ndarray:
    document_frequency: Counter = Counter()
    for ref_list in refs:
        seen: set = set()
        for r in ref_list:
            for order in r.counts:
                seen.update(order)
        document_frequency.update(seen)
    log_n = math.log(float(len(refs)))
    # pycocoevalcap: weight = log(N) - log(max(1, df)); n-grams no reference has get df 0 -> log(N).
    idf = {g: log_n - math.log(max(1.0, df)) for g, df in document_frequency.items()}
    scores = np.zeros(len(hyps))
    two_sigma_sq = 2 * sigma**2
    vector_cache: dict[int, tuple[list[dict], list[float]]] = {}

    def vectors(text: _Text) -> tuple[list[dict], list[float]]:
        key = id(text)  # _prepare shares one _Text per distinct string
        if key not in vector_cache:
            vector_cache[key] = _cider_vectors(text.counts, idf, log_n)
        return vector_cache[key]

    for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
        vec_h, norm_h = vectors(hyp)
        len_h = max(0, len(hyp.tokens) - 1)  # number of bigrams: pycocoevalcap's "length"
        total = 0.0
        for ref in ref_list:
            vec_r, norm_r = vectors(ref)
            delta = float(len_h - max(0, len(ref.tokens) - 1))
            penalty = math.exp(-(delta**2) / two_sigma_sq)
            for k in range(MAX_N):
                vh, vr = vec_h[k], vec_r[k]
                val = 0.0
                # in the hypothesis' n-gram order, as pycocoevalcap: a set intersection's order changes with
                # the process's hash seed, and with it the sum's last bit
                for g, x in vh.items():
                    y = vr.get(g)
                    if y is not None:
                        val += (x if x < y else y) * y
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                total += val * penalty
        scores[i] = total / MAX_N / len(ref_list) * 10.0
    return scores


# ---------------------------------------------------------------- public API


@dataclass
class TextScores:
    """Corpus and per-study scores of the n-gram metrics plus BLEU's sufficient statistics."""

    corpus: dict[str, float]
    per_study: dict[str, np.ndarray]
    bleu_stats: BleuStats


def _as_ref_lists(references: list) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def text_metrics(hypotheses: list[str], references: list, metrics: tuple[str, ...] = ("bleu", "rouge_l", "cider_d")) -> TextScores:
    """Score tokenized `hypotheses` against `references` (a string or list of strings per study)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no studies to score")
    ref_lists = _as_ref_lists(references)
    if any(not refs for refs in ref_lists):
        raise ValueError("every study needs at least one reference")
    corpus: dict[str, float] = {}
    per_study: dict[str, np.ndarray] = {}
    cache: dict[str, _Text] = {}
    hyps = _prepare(hypotheses, cache)
    refs = [_prepare(r, cache) for r in ref_lists]
    stats = _bleu_stats(hyps, refs)
    if "bleu" in metrics:
        corpus_bleu = bleu_from_totals(stats.correct.sum(0), stats.guess.sum(0), stats.testlen.sum(), stats.reflen.sum())
        sentence = _sentence_bleu(stats)
        for k in range(MAX_N):
            corpus[f"bleu{k + 1}"] = float(corpus_bleu[k])
            per_study[f"bleu{k + 1}"] = sentence[:, k]
    if "rouge_l" in metrics:
        rouge = np.array([rouge_l_pair(h, r) for h, r in zip(hypotheses, ref_lists)])
        corpus["rouge_l"] = float(rouge.mean())
        per_study["rouge_l"] = rouge
    if "cider_d" in metrics:
        cider = _cider_scores(hyps, refs)
        corpus["cider_d"] = float(cider.mean())
        per_study["cider_d"] = cider
    return TextScores(corpus, per_study, stats)
