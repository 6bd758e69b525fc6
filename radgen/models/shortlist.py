"""Greedy picks over a shortlist of the vocabulary, checked against all of it.

Why: drafted decoding (`radgen.models.speculative`) runs the LM head on every position of a batch-1
pass, and radgen-small's head (SmolLM2: 49,152 x 576, a fifth of the decoder's weights) was ~9% of
a report's time on a 2-core AVX2 CPU in a scratch profile, while the reports it writes use ~2,400 distinct tokens. So
the walk that accepts drafted tokens reads only the head's rows for a shortlist: every token of
the draft table (the prompts and reports it was seeded with and every report written since), of
the report memory (`ReportGenerator` adds those), the row guides' and eos. Each picked token is then scored once, when the batch ends, by the whole head:
that gives its log-probability (over the whole vocabulary, as before), and shows whether a token
off the list would have beaten the pick. Greedy's processors only lower logits (n-gram blocking,
`min_new_tokens`, suppressed tokens; a repetition penalty turns the shortlist off), so an off-list
token whose raw logit is below the pick's could not have been chosen; a row where one is not is
decoded again with the whole head. The text is the greedy text either way: the listed rows run
through the head's own kind of kernel. Packed for oneDNN where the head is, that gives each logit
the head's value to the bit, so even near-ties fall the same way; a plain head's BLAS may sum in
another order for another column count (MKL's AVX2 kernels do at some shapes), which gives the
same values to fp32 rounding, so there a near-tie may fall otherwise, as between the decoder
body's pass shapes (a drafted pass runs other row counts than plain greedy). Measured on that CPU:
10% off a batch-1 report, 8% off batch 32, the same 290 test reports (docs/benchmarks.md,
Performance, "Drafted picks over a shortlist of the vocabulary").

A model whose reports keep leaving the list (another domain, an empty table) would pay for two
decodes: below `MIN_TOKENS` tokens, or while more than `MAX_MISS_RATE` of recent rows missed, the
shortlist stands aside, and it tries again as the misses age.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from radgen.models.fast import token_logprobs
from radgen.models.packed_linear import PackedLinear

# below this many tokens the list is still being learnt (a table without draft_reports.txt)
MIN_TOKENS = 256
# the share of recent rows that may miss (decoded twice) before the shortlist stands aside
MAX_MISS_RATE = 0.05
# weight of the newest row in the running miss rate; a skipped call ages it by the same factor
MISS_RATE_STEP = 0.05
# positions whose full-vocabulary logits are computed at once when picks are scored (fp32: 192 KB each)
SCORE_CHUNK = 128


class ShortHead:
    """The LM head's rows for the shortlisted tokens: logits over them, and their place in the vocabulary.

    `packed`: the head's `PackedLinear`, whose rows these are packed like (the same layout). Each
    logit then comes from the same kernel as the head's, which sums it in the same order whatever
    the other rows are: the values the head gives the same positions, to the bit
    (tests/models/test_shortlist.py), so near-ties fall as the head's do. A plain head's rows go
    through `F.linear` as the head does: the same values to fp32 rounding (see the module's note).
    """

    def __init__(self, ids: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, vocabulary: int,
                 packed: PackedLinear | None = None):
        self.ids, self.weight, self.bias, self.vocabulary = ids, weight, bias, vocabulary
        self._packed = PackedLinear.from_weight(weight, bias, packed.rows_hint) if packed is not None else None
        self._positions: dict[int, int] | None = None

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., shortlist) logits, the head's values for the shortlisted tokens."""
        if self._packed is not None:
            return self._packed.rows(hidden.reshape(-1, hidden.shape[-1])).reshape(*hidden.shape[:-1], -1)
        return F.linear(hidden.to(self.weight.dtype), self.weight, self.bias)

    def position(self, token: int) -> int | None:
        """Where `token` is among the listed tokens (its column in `logits`' output); None if off the list."""
        if self._positions is None:  # made once: ShortHeads are rebuilt when the list grows
            self._positions = {t: n for n, t in enumerate(self.ids.tolist())}
        return self._positions.get(token)

    def spread(self, short: torch.Tensor) -> torch.Tensor:
        """(N, shortlist) logits as (N, vocabulary), -inf off the list, for code that indexes token ids."""
        full = short.new_full((short.shape[0], self.vocabulary), float("-inf"))
        full[:, self.ids] = short
        return full


class Shortlist:
    """The tokens a model's reports use, grown as it writes them, and its LM head's rows for them.

    Thread-safe (the server decodes from several threads); a copy or pickle of a model carries the
    tokens and drops the cached rows."""

    def __init__(self) -> None:
        self._tokens: set[int] = set()
        self._lock = threading.Lock()
        self._cache: tuple[int, int, ShortHead | None] | None = None  # (id(head), tokens it was built with, rows)
        self._same_as_head: tuple[int, int, bool] | None = None  # (id(head), id(source), whether source holds head's weight)
        self.miss_rate = 0.0

    def __len__(self) -> int:
        return len(self._tokens)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_cache"] = state["_same_as_head"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._tokens.update(ids)

    def usable(self) -> bool:
        """Worth a try: enough tokens, and recent rows seldom left the list."""
        return len(self._tokens) >= MIN_TOKENS and self.miss_rate <= MAX_MISS_RATE

    def skipped(self) -> None:
        """A decode went without the list: let past misses age, so the list is tried again."""
        with self._lock:
            self.miss_rate *= 1 - MISS_RATE_STEP

    def record(self, rows: int, misses: int) -> None:
        """`rows` rows were decoded on the list, `misses` of them again without it."""
        with self._lock:  # decoding lanes record from several threads
            for missed in [True] * misses + [False] * (rows - misses):
                self.miss_rate += MISS_RATE_STEP * (float(missed) - self.miss_rate)

    def head(self, head: nn.Module, source: torch.Tensor | None = None) -> ShortHead | None:
        """`head`'s rows for the listed tokens (kept until the list grows); None where `head` has no
        plain weight matrix (an int8 head) or the list covers most of it. `source`: a dense matrix
        that may hold the head's weight (the input embedding a tied head was packed from); once
        checked equal, rows are read from it, so a packed head is not unpacked (113 MB, ~40 ms for
        SmolLM2's) every time the list grows: at batch 1 it grew in 14 of 20 calls."""
        with self._lock:
            cached = self._cache
            if cached is not None and cached[0] == id(head) and cached[1] == len(self._tokens):
                return cached[2]
            tokens = sorted(self._tokens)
        weight = self._rows_source(head, source)
        short = None
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            vocabulary = weight.shape[0]
            ids = torch.tensor([t for t in tokens if 0 <= t < vocabulary], dtype=torch.long, device=weight.device)
            if len(ids) <= vocabulary // 2:  # else hardly shorter than the head: no gain
                bias = getattr(head, "bias", None)
                short = ShortHead(ids, weight.detach().index_select(0, ids).contiguous(),
                                  None if bias is None else bias.detach().index_select(0, ids), vocabulary,
                                  packed=head if isinstance(head, PackedLinear) else None)
        with self._lock:
            self._cache = (id(head), len(tokens), short)
        return short

    def _rows_source(self, head: nn.Module, source: torch.Tensor | None) -> torch.Tensor | None:
        """`source` where it holds exactly `head`'s weight (checked once per pair), else the head's own
        weight (a packed head unpacks it here)."""
        weight = None
        if source is not None:
            with self._lock:
                known = self._same_as_head
            if known is None or known[:2] != (id(head), id(source)):
                weight = getattr(head, "weight", None)
                same = isinstance(weight, torch.Tensor) and weight.shape == source.shape and weight.dtype == source.dtype \
                    and bool(torch.equal(weight, source.detach()))
                known = (id(head), id(source), same)
                with self._lock:
                    self._same_as_head = known
            if known[2]:
                return source.detach()
        return weight if weight is not None else getattr(head, "weight", None)


def score_picks(head: nn.Module, short: ShortHead, hidden: Sequence[torch.Tensor], picks: Sequence[Sequence[int]],
                greedy: Sequence[Sequence[int]], allowed: Callable[[int, int, int], bool] | None = None,
                ) -> tuple[list[list[float]], list[bool]]:
    """Per row: the log-probability of each picked token (fp32 log-softmax over the whole vocabulary)
    from its position's hidden state, and whether a token off the list has a raw logit at least the
    greedy pick's at some position (the row must be decoded again without the list). `greedy[r][j]`
    is the processors' choice at position j, which a guide may have replaced by `picks[r][j]`.
    `allowed(r, j, token)`: whether a processor that forbids tokens outright (the known-words rule)
    lets `token` stand at row r's position j; an off-list token it forbids there is no miss."""
    counts = [len(p) for p in picks]
    if not sum(counts):
        return [[] for _ in picks], [False] * len(picks)
    states = torch.cat([h for h in hidden if len(h)])
    chosen = torch.tensor([t for row in picks for t in row], device=states.device)
    best = torch.tensor([t for row in greedy for t in row], device=states.device)
    where = [(row, j) for row, n in enumerate(counts) for j in range(n)]
    values, beaten = [], []
    for start in range(0, len(states), SCORE_CHUNK):
        logits = head(states[start:start + SCORE_CHUNK]).float()
        values.append(token_logprobs(logits, chosen[start:start + SCORE_CHUNK]))
        reference = logits.gather(1, best[start:start + SCORE_CHUNK, None]).squeeze(1)
        logits[:, short.ids] = float("-inf")
        above = (logits.max(-1).values >= reference).tolist()
        if allowed is not None:
            for p in (p for p, hit in enumerate(above) if hit):
                row, j = where[start + p]
                rivals = (logits[p] >= reference[p]).nonzero().flatten().tolist()
                above[p] = any(allowed(row, j, token) for token in rivals)
        beaten.extend(above)
    flat = torch.cat(values).tolist()
    out, missed, at = [], [], 0
    for n in counts:
        out.append(flat[at:at + n])
        missed.append(any(beaten[at:at + n]))
        at += n
    return out, missed
