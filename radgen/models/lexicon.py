"""Known words: the decoder writes only words its training reports contain (lexically constrained decoding).

Why: a small decoder spells a report piece by piece, and late in a long report radgen-small
(SmolLM2-135M + LoRA) sometimes joins pieces into words no report has. On the 290 IU-Phantom test
studies 17% of its reports held a word no train report has, in fp32 as in bf16, most of them made
up: "no evidence of acute cardiectomy" (14 reports), "pneumothmonary", "cardiLEGATO"; with the rule,
none but the template sentence the findings-consistency step adds (docs/benchmarks.md, Grounding,
"Known words"). A reader takes such a report for broken, and a real word in the wrong place
("cardiectomy") says something false. Such tails also leave the vocabulary shortlist, so their
rows were decoded twice (radgen.models.shortlist): one study took 3.4 s instead of ~0.7 s.

The rule is per word, on whitespace: a token may continue the word being written only while the
word stays the beginning of a known word; a token that starts a new word (or the end of the
report) is allowed only once the word before it is a whole known word, and its own text must
begin a known word. Where the decoder's choice breaks the rule, the highest-scoring token that
keeps it is taken instead. The known words come from the model's report memory (its training
reports, cleaned as it was trained: `radgen.models.memory`), so the lexicon is the training
text's; a model without a report memory decodes unconstrained. `generate(known_words=False)` (the
recipe's `generate.known_words`) turns the rule off.

A token's text is read from the tokenizer's own token string: GPT-2-style byte-level BPE marks a
leading space with "Ġ", SentencePiece with "▁"; `convert_tokens_to_string` maps bytes back to text.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch

WORD_START_MARKS = ("Ġ", "▁")  # byte-level BPE (GPT-2, SmolLM2, Qwen), SentencePiece (LLaMA)
WORDPIECE_MARK = "##"  # WordPiece (BERT, BLIP's decoder) marks a word's later pieces instead
KNOWN_WORDS_LOCK = threading.Lock()  # a model builds its rule once, whichever decoding lane asks first


class Lexicon:
    """The known words of a body of text, and every beginning of one."""

    def __init__(self, words: Iterable[str]):
        self.words = frozenset(w for w in words if w)
        self.prefixes = frozenset(w[:end] for w in self.words for end in range(1, len(w) + 1))

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Lexicon":
        return cls(word for text in texts for word in text.split())

    def __len__(self) -> int:
        return len(self.words)


class TokenLexicon:
    """A Lexicon over a tokenizer's vocabulary: which token may follow a row's tokens so far.

    `allows(token, tokens)` is the fast check made for every picked token; `mask(tokens)` is the
    whole vocabulary's (bool), made only where the decoder's choice is not allowed (and by HF
    `generate`'s logits processor)."""

    def __init__(self, lexicon: Lexicon, tokenizer: Any, eos: int, vocabulary: int | None = None):
        self.lexicon, self.eos = lexicon, eos
        size = max(len(tokenizer), vocabulary or 0)
        raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.starts: list[bool] = []
        self.texts: list[str | None] = []  # None: never allowed (special, or whitespace inside)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        wordpiece = sum(1 for token in raw if token and token.startswith(WORDPIECE_MARK)) > len(raw) // 20
        for token_id, token in enumerate(raw):
            token = token or ""
            if wordpiece:
                starts = not token.startswith(WORDPIECE_MARK)
                text = token if starts else token[len(WORDPIECE_MARK):]
            else:
                starts = token.startswith(WORD_START_MARKS)
                text = tokenizer.convert_tokens_to_string([token]) if token else ""
                text = text.lstrip(" ") if starts else text
                if starts and text.startswith("▁"):
                    text = text[1:]
            usable = token_id not in special and not any(ch.isspace() for ch in text)
            self.starts.append(starts)
            self.texts.append(text if usable else None)
        self.starts += [False] * (size - len(raw))  # the embedding's padding rows: never allowed
        self.texts += [None] * (size - len(raw))
        self.size = size
        prefixes = lexicon.prefixes
        self._new_word = torch.tensor([s and t is not None and (t == "" or t in prefixes) for s, t in zip(self.starts, self.texts)])
        # continuation tokens by their text: how a word being written can go on
        self._by_text: dict[str, list[int]] = {}
        for token_id, (starts, text) in enumerate(zip(self.starts, self.texts)):
            if not starts and text:
                self._by_text.setdefault(text, []).append(token_id)
        # every token the rule allows somewhere: a known word's beginning, or a piece of one after its first letter
        inner = {word[i:j] for word in lexicon.words for i in range(1, len(word)) for j in range(i + 1, len(word) + 1)}
        self.possible = frozenset([eos] + [t for t, ok in enumerate(self._new_word.tolist()) if ok]
                                  + [t for text, ids in self._by_text.items() if text in inner or text in prefixes for t in ids])

    def word_so_far(self, tokens: Sequence[int]) -> str:
        """The word the row is writing: its text since the last token that started a word."""
        parts = []
        for token in reversed(tokens):
            text = self.texts[token] if 0 <= token < self.size else None
            parts.append(text or "")
            if token == self.eos or text is None or self.starts[token]:
                break
        return "".join(reversed(parts))

    def _complete(self, word: str) -> bool:
        # "" after a space token alone counts as whole too: SmolLM2 spells " 3" as " " + "3", and where
        # the decoder writes that space and then changes its mind, forcing a digit after it wrote worse
        # text ("abnormality . 3 x x x right") than letting a word or the end follow (a double space,
        # which the sentence split removes)
        return word == "" or word in self.lexicon.words

    def allows(self, token: int, tokens: Sequence[int]) -> bool:
        """Whether `token` may come after `tokens` (the row's new tokens so far)."""
        if token not in self.possible:
            return False
        word = self.word_so_far(tokens)
        if token == self.eos:
            return self._complete(word)
        text = self.texts[token] if 0 <= token < self.size else None
        if text is None:
            return False
        if self.starts[token] or not tokens:
            return (not self.starts[token] or self._complete(word)) and (text == "" or text in self.lexicon.prefixes)
        return word + text in self.lexicon.prefixes

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one TokenLexicon a model; words bounded by the lexicon
    def _continuations(self, word: str) -> tuple[int, ...]:
        """Tokens that keep `word` the beginning of a known word: for each longer known beginning,
        the tokens spelling what it adds."""
        found: list[int] = []
        for prefix in self.lexicon.prefixes:
            if len(prefix) > len(word) and prefix.startswith(word):
                found.extend(self._by_text.get(prefix[len(word):], ()))
        return tuple(found)

    def mask(self, tokens: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """(vocabulary,) bool: the tokens allowed after `tokens`."""
        word = self.word_so_far(tokens)
        allowed = self._new_word.clone() if self._complete(word) or not tokens else torch.zeros(self.size, dtype=torch.bool)
        # (the first token of a report may lack the space mark: nothing came before it)
        allowed[list(self._continuations(word))] = True
        allowed[self.eos] = self._complete(word)
        return allowed.to(device)

    def best(self, scores: torch.Tensor, tokens: Sequence[int]) -> int:
        """The highest-scoring allowed token of a (vocabulary,) score row."""
        masked = scores.float().masked_fill(~self.mask(tokens, scores.device)[: scores.shape[-1]], float("-inf"))
        return int(masked.argmax())


class KnownWordsProcessor:
    """HF `LogitsProcessor`: -inf for tokens that break the known-words rule (beam search, sampling,
    HF greedy). `prompt_length`: leading ids of `input_ids` that are the prompt, not the report."""

    def __init__(self, lexicon: TokenLexicon, prompt_length: int = 0):
        self.lexicon, self.prompt_length = lexicon, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            allowed = self.lexicon.mask(ids, scores.device)[: scores.shape[-1]]
            scores[row] = scores[row].masked_fill(~allowed, float("-inf"))
        return scores
