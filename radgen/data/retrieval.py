"""Nearest texts by TF-IDF cosine: which stored study's clinical question is most like this one's,
and which of several reports is most like the others.

`TfidfIndex` is used by the `nearest-train` baseline (radgen.metrics.baselines) and by retrieval-guided
decoding's report memory (radgen.models.memory). Lower-cased word unigrams, "xxxx" (IU's
anonymisation) dropped, smoothed idf; an inverted index makes a query cost its words' postings, not
the whole collection.

`NgramIndex.consensus` picks, among candidate reports, the one with the highest summed similarity to
the others (consensus re-ranking of retrieved captions: Devlin et al., "Exploring nearest neighbor
approaches for image captioning", 2015). Why: the single nearest report carries one author's
wording about one patient (a spine, a surgery, a comparison); the consensus of the nearest few is
what most of them say. Similarity: cosine of 1-4-gram TF-IDF vectors (the n-grams CIDEr counts).
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower().replace("xxxx", " "))


class TfidfIndex:
    """`nearest(query)`: the index of the stored text with the highest TF-IDF cosine to `query`
    (ties: the first stored), or None when no stored text shares a word with it; `nearest_k(query, k)`:
    the k best, best first (fewer when fewer share a word)."""

    def __init__(self, texts: Sequence[str]):
        tokenized = [_words(t) for t in texts]
        df: Counter = Counter()
        for tokens in tokenized:
            df.update(set(tokens))
        n = len(tokenized)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, tokens in enumerate(tokenized):
            for word, value in self._vector(tokens).items():
                self._postings.setdefault(word, []).append((i, value))

    def _vector(self, tokens: list[str]) -> dict[str, float]:
        counts = Counter(t for t in tokens if t in self.idf)
        vec = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values()))
        return {w: v / norm for w, v in vec.items()} if norm else {}

    def _scores(self, query: str) -> Counter:
        scores: Counter = Counter()
        for word, value in self._vector(_words(query)).items():
            for i, other in self._postings.get(word, ()):
                scores[i] += value * other
        return scores

    def nearest(self, query: str) -> int | None:
        ranked = self.nearest_k(query, 1)
        return ranked[0] if ranked else None

    def nearest_k(self, query: str, k: int) -> list[int]:
        ranked = heapq.nsmallest(k, self._scores(query).items(), key=lambda item: (-item[1], item[0]))
        return [i for i, _ in ranked]


class NgramIndex:
    """1-4-gram TF-IDF vectors of stored reports (words as `TfidfIndex` reads them); `consensus(candidates)`.

    Document frequencies are counted over every stored text when the index is built (time
    proportional to the collection); a text's vector is computed when it is first a candidate."""

    def __init__(self, texts: Sequence[str], max_n: int = 4):
        self.texts, self.max_n = list(texts), max_n
        df: Counter = Counter()
        for text in self.texts:
            df.update(set(self._grams(text)))
        self._ids = {gram: k for k, gram in enumerate(df)}
        n = len(self.texts)
        self.idf = np.array([math.log(n / c) for c in df.values()], dtype=np.float64)
        self._vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # computed as candidates ask for them

    def _grams(self, text: str) -> Counter:
        words = _words(text)
        return Counter(tuple(words[i:i + n]) for n in range(1, self.max_n + 1) for i in range(len(words) - n + 1))

    def vector(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(n-gram ids, unit-norm TF-IDF weights) of stored text i."""
        if i not in self._vectors:
            counts = self._grams(self.texts[i])
            ids = np.fromiter((self._ids[g] for g in counts), dtype=np.int64, count=len(counts))
            values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self.idf[ids]
            norm = float(np.linalg.norm(values))
            keep = values > 0
            self._vectors[i] = (ids[keep], values[keep] / norm) if norm else (ids[:0], values[:0])
        return self._vectors[i]

    def _similarities(self, candidates: Sequence[int]) -> np.ndarray:
        """(k, k) cosine matrix of the candidates: one dense product over the n-grams they use."""
        vectors = [self.vector(i) for i in candidates]
        used, columns = np.unique(np.concatenate([ids for ids, _ in vectors]), return_inverse=True)
        dense = np.zeros((len(vectors), len(used)))
        start = 0
        for row, (ids, values) in enumerate(vectors):
            dense[row, columns[start:start + len(ids)]] = values
            start += len(ids)
        return dense @ dense.T

    def similarity(self, i: int, j: int) -> float:
        return float(self._similarities([i, j])[0, 1])

    def consensus(self, candidates: Sequence[int]) -> int:
        """The candidate with the highest summed similarity to the other candidates (ties: the earlier one)."""
        candidates = list(candidates)
        if len(candidates) <= 2:
            return candidates[0]
        sums = self._similarities(candidates).sum(axis=1)  # the self-similarity (1, or 0 for an empty text) adds alike
        best = max(range(len(candidates)), key=lambda k: (round(float(sums[k]), 9), -k))
        return candidates[best]
