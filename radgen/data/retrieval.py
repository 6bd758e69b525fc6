"""Nearest texts by TF-IDF cosine: which stored study's clinical question is most like this one's.

Used by the `nearest-train` baseline (radgen.metrics.baselines) and by retrieval-guided decoding's
report memory (radgen.models.memory). Lower-cased word unigrams, "xxxx" (IU's anonymisation) dropped,
smoothed idf; an inverted index makes a query cost its words' postings, not the whole collection.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower().replace("xxxx", " "))


class TfidfIndex:
    """`nearest(query)`: the index of the stored text with the highest TF-IDF cosine to `query`
    (ties: the first stored), or None when no stored text shares a word with it."""

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

    def nearest(self, query: str) -> int | None:
        scores: Counter = Counter()
        for word, value in self._vector(_words(query)).items():
            for i, other in self._postings.get(word, ()):
                scores[i] += value * other
        if not scores:
            return None
        return max(scores.items(), key=lambda item: (item[1], -item[0]))[0]
