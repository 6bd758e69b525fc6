"""Draft-and-verify greedy decoding: the greedy report, several tokens per decoder pass.

Why: at batch 1 a decoder step is bound by reading the weights (SmolLM2-135M in fp32: 0.54 GB a
step), not by arithmetic, so scoring k+1 proposed tokens in one pass costs little more than
producing one. Radiology reports are templated ("No pneumothorax or pleural effusion."), so an
n-gram table over reports seen before (reports the user adds, and every report this model has
written in this process) predicts most next tokens. One decoder pass scores the proposal; the
longest prefix equal to the decoder's own argmax is kept, plus the decoder's next token. Every
kept token is the argmax given exactly the tokens before it, so the text is the greedy text, and
the same logits give each token's log-probability (confidence). This is prompt-lookup /
retrieval-based speculative decoding (Saxena 2023; He et al., REST, 2023) with the report history
as the datastore; HF's assisted generation has no equivalent for `inputs_embeds` prefixes or batches.

Batches: rows accept different numbers of tokens. Rather than crop a shared KV cache, a rejected
position stays in the cache with attention mask 0, and each row carries its own position ids, so
one pass serves the whole batch. The cache grows by k+1 positions a pass; for 60-token reports
that is a few hundred positions at most.

Decoding settings honoured exactly as HF `generate` applies them to greedy search over the new
tokens: `repetition_penalty`, `no_repeat_ngram_size`, `min_new_tokens`, `suppress_tokens`, eos,
`max_new_tokens`.
Beam search and sampling are not drafted (the caller falls back to HF `generate`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from radgen.models.fast import base_model, lm_body_and_head, token_logprobs
from radgen.models.kv_cache import growing_cache
from radgen.models.lexicon import TokenLexicon
from radgen.models.rescoring import PrefillState, cache_argument, keep_decoded
from radgen.models.shortlist import ShortHead, Shortlist, score_picks

# decoders whose forward takes explicit position_ids with a holed attention mask and a DynamicCache
# (tested against HF greedy generate in tests/generate/test_speculative.py)
SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "opt"}


# A CPU decoder pass costs about the same for one token or a few hundred in flight (reading the
# weights dominates); past that it is compute-bound and every rejected draft token is paid for. So on
# CPU a pass's drafts share this many tokens among the rows still decoding: radgen-small drafts its
# full 16 at batch 1 and 4 a row at batch 32. Chosen in informal timing runs on training-split
# studies (16 vs 8 at batch 1: ~15% faster; at batch 32 16 a row was ~10% slower than 8, and 4 a
# row 2-7% faster); the defaults' measured speed: docs/benchmarks.md, "Performance". GPUs: no cut.
CPU_PASS_TOKENS = 160

# The LM head (SmolLM2: 49,152 x 576) costs about the same for 1 position as for 6 (1.1-1.4 ms on 2
# cores, benchmarks/cpu_kernels.py: reading its weights dominates), so a pass with at most this many positions in flight runs it
# on all of them at once instead of one walked column at a time (`_PassScores`): at batch 1 the walk
# reads ~6 columns a pass. Wider passes (batch 32: 160) keep the lazy head, which skips the ~2/3 of
# positions the walk never reads.
EAGER_HEAD_POSITIONS = 32

# a retrieved report guides a row only where it continues the row's last 2+ tokens: a match on one
# token ("the", ".") jumps to an arbitrary place in it
GUIDE_MIN_MATCH = 2


def draft_width(rows: int, draft_tokens: int, device: torch.device) -> int:
    """How many tokens each of `rows` rows may draft this pass (at most `draft_tokens`, at least 1)."""
    if device.type != "cpu" or draft_tokens <= 1:
        return draft_tokens
    return max(1, min(draft_tokens, CPU_PASS_TOKENS // rows - 1))


class NgramDraft:
    """Most-frequent-continuation table over token sequences seen before (orders 1..max_order).

    `propose(context, k)` follows the longest suffix of `context` found in the table, one token at
    a time, up to k tokens. Thread-safe (the server decodes from several threads). Learning stops
    after `max_keys` distinct n-grams so a long-running server's memory stays bounded.
    """

    # order 8: on 96 validation studies, 12% fewer drafted passes at batch 32 and 16% fewer at batch 1
    # than order 4 (longer keys tell apart the templates' shared phrases); 12 adds little
    # (benchmarks/draft_settings.py; docs/benchmarks.md, "Performance").
    # max_keys: a key (tuple + its counts) costs ~400 bytes, so 500,000 keep a long-running server's
    # table within ~200 MB (benchmarks/draft_table_memory.py); radgen-small's shipped table is 7,467 keys
    def __init__(self, max_order: int = 8, max_keys: int = 500_000):
        self.max_order = max_order
        self.max_keys = max_keys
        self._counts: dict[tuple[int, ...], dict[int, int]] = {}
        self._best: dict[tuple[int, ...], int] = {}
        self._vocabulary: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._best)

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle of a model: the table, a fresh lock
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(self, ids: Sequence[int]) -> None:
        ids = list(ids)
        with self._lock:
            self._vocabulary.update(ids)  # bounded by the tokenizer, so it grows past max_keys
            if len(self._counts) >= self.max_keys:
                return
            for n in range(1, self.max_order + 1):
                for start in range(len(ids) - n):
                    key = tuple(ids[start:start + n])
                    follower = ids[start + n]
                    counts = self._counts.setdefault(key, {})
                    counts[follower] = counts.get(follower, 0) + 1
                    best = self._best.get(key)
                    if best is None or counts[follower] > counts[best]:
                        self._best[key] = follower

    def clear(self) -> None:
        with self._lock:
            self._counts, self._best, self._vocabulary = {}, {}, set()

    @property
    def vocabulary(self) -> frozenset[int]:
        """Every token the table was given (its reports' and prompts' tokens)."""
        with self._lock:
            return frozenset(self._vocabulary)

    def propose(self, context: Sequence[int], k: int, min_match: int = 1) -> list[int]:
        """Up to k tokens; each follows the longest suffix (at least `min_match` tokens) found in the table."""
        ctx = list(context[-self.max_order:])
        out: list[int] = []
        best = self._best
        while len(out) < k:
            for n in range(min(self.max_order, len(ctx)), min_match - 1, -1):
                follower = best.get(tuple(ctx[-n:]))
                if follower is not None:
                    break
            else:
                break
            out.append(follower)
            ctx.append(follower)
        return out


def _right_padded(rows: Sequence[Sequence[int]], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each (len(rows), width): every row's tokens from the left, `pad` (mask 0) after."""
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def supports_drafting(decoder: nn.Module) -> bool:
    base = base_model(decoder)
    if getattr(base.config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    return "position_ids" in inspect.signature(base.forward).parameters


@dataclass
class DraftedOutput:
    token_ids: list[list[int]]  # new tokens per row, eos included when generated
    logprobs: list[list[float]]  # raw-logit log p of each token
    passes: int  # decoder passes after the prefill
    prefill: PrefillState | None = None  # kept when drafted_greedy(keep_prefill=True)


def _banned_ngram_tokens(tokens: list[int], n: int) -> list[int]:
    """HF NoRepeatNGramLogitsProcessor for one row: tokens that would repeat an n-gram of `tokens`."""
    if n <= 0 or len(tokens) + 1 < n:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1:])
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]


class _GreedyRule:
    """The greedy choice after a row's new tokens, with HF's greedy logits processors applied.

    Re-implemented rather than calling HF's LogitsProcessorList: those clone a full (B, V) score
    tensor per call, and verification asks for one position of one row at a time; here the raw
    argmax stands unless a processor would change it (tests compare with HF `generate`)."""

    def __init__(self, eos: int, repetition_penalty: float, no_repeat_ngram_size: int, min_new_tokens: int,
                 suppress_tokens: Sequence[int] = (), lexicon: TokenLexicon | None = None):
        self.eos, self.penalty, self.ngram, self.min_new = eos, repetition_penalty, no_repeat_ngram_size, min_new_tokens
        self.suppressed = list(suppress_tokens)  # HF's suppress_tokens: never generated
        self.lexicon = lexicon  # known words only (radgen.models.lexicon); None: any token

    def choose(self, logits: torch.Tensor | Callable[[], torch.Tensor], argmax: int, tokens: list[int]) -> int:
        """`argmax` of the raw `logits` (the vocabulary row, or a function that makes it: most
        positions never need it) is the answer unless a processor changes this position."""
        banned = _banned_ngram_tokens(tokens, self.ngram) + self.suppressed
        if len(tokens) < self.min_new:
            banned.append(self.eos)
        if (self.penalty == 1.0 or not tokens) and argmax not in banned and (self.lexicon is None or self.lexicon.allows(argmax, tokens)):
            return argmax  # nothing to change: the common case, no copy of the vocabulary row
        row = logits() if callable(logits) else logits
        scores = row.to(torch.float32, copy=True)  # HF's processors run on fp32 scores
        if self.penalty != 1.0 and tokens:
            seen = torch.tensor(sorted(set(tokens)), device=scores.device)
            picked = scores[seen]
            scores[seen] = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        if banned:
            scores[banned] = -float("inf")
        if self.lexicon is not None:
            return self.lexicon.best(scores, tokens)
        return int(scores.argmax())

    def allows(self, token: int, tokens: list[int]) -> bool:
        """Whether a processor forbids `token` after `tokens` (min_new_tokens' eos, a repeated n-gram, a
        suppressed token, a word that is not known)."""
        if (token == self.eos and len(tokens) < self.min_new) or token in self.suppressed:
            return False
        if self.lexicon is not None and not self.lexicon.allows(token, tokens):
            return False
        return token not in _banned_ngram_tokens(tokens, self.ngram)


class _PassScores:
    """The logits of a pass's positions, computed as the accept walk asks for them.

    Why: verification reads position j of a row only while the row's draft still agrees, about a
    third of the positions at batch 32, so where the decoder's logits are just its LM head over the
    body's hidden states (`radgen.models.fast.lm_body_and_head`) the head runs on those
    positions only, one column of rows at a time: at batch 32 the head over every drafted position
    was ~20% of a pass. Logits stay in the decoder's dtype until the walk reads a column; that
    column's exact fp32 copy gives the argmax and each chosen token's fp32 log-softmax. Passes of
    at most `EAGER_HEAD_POSITIONS` positions come with all their logits (`logits`) instead. With a
    shortlist (`radgen.models.shortlist`), every position's logits over the listed tokens (`short`),
    -inf elsewhere; `full_at` gives the whole head's.
    """

    def __init__(self, logits: torch.Tensor | None = None, hidden: torch.Tensor | None = None, head: nn.Module | None = None,
                 short: ShortHead | None = None):
        self.logits, self.hidden, self.head, self.short = logits, hidden, head, short
        self.short_logits = short.logits(hidden) if short is not None else None  # type: ignore[arg-type]

    @property
    def width(self) -> int:
        return (self.logits if self.logits is not None else self.hidden).shape[1]

    def column(self, rows: list[int], position: int) -> "_Column":
        """The logits of `rows` at `position`, as the accept walk reads them: in fp32, once, for the
        argmax and the log-probabilities (HF greedy takes the argmax of its fp32 copy)."""
        if self.short_logits is not None:
            return _Column(self.short_logits[torch.tensor(rows, device=self.short_logits.device), position].float(), self.short)
        return _Column(self.full_at(rows, position).float())

    def full_at(self, rows: list[int], position: int) -> torch.Tensor:
        """(len(rows), vocabulary) logits of `rows` at `position` over the whole vocabulary."""
        source = self.logits if self.logits is not None else self.hidden
        index = torch.tensor(rows, device=source.device)
        picked = source[index, position]
        return picked if self.logits is not None else self.head(picked)


class _Column:
    """One position's fp32 logits for the rows the accept walk reads there: over the whole vocabulary,
    or over a shortlist's tokens (`short`), whose other logits count as -inf.

    Why not spread a shortlist column over the vocabulary first, as the walk once did: every column
    then made, upcast and searched a (rows, 49,152) matrix, where the list's ~3,000 tokens hold
    every value the walk reads (a processor's rare fallback spreads one row, `row`). The list's ids
    are in vocabulary order, so its first maximum is the vocabulary's first maximum, as before."""

    def __init__(self, logits: torch.Tensor, short: ShortHead | None = None):
        self.logits, self.short = logits, short

    def top(self) -> list[int]:
        """Each row's highest-logit token (the first, on ties)."""
        best = self.logits.max(-1).indices  # max(dim).indices: several times faster than argmax, same first maximum
        return (best if self.short is None else self.short.ids[best]).tolist()

    def row(self, k: int) -> torch.Tensor:
        """Row k's logits over the whole vocabulary (-inf off a shortlist)."""
        return self.logits[k] if self.short is None else self.short.spread(self.logits[k:k + 1])[0]

    def value(self, k: int, token: int) -> float:
        """Row k's logit for `token`."""
        if self.short is None:
            return float(self.logits[k, token])
        at = self.short.position(token)
        return float("-inf") if at is None else float(self.logits[k, at])


@torch.no_grad()
def drafted_greedy(decoder: nn.Module, inputs_embeds: torch.Tensor, draft: NgramDraft, prefix_ids: Sequence[int] | Sequence[Sequence[int]],
                   eos: int, pad: int, max_new_tokens: int, draft_tokens: int = 16, repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, min_new_tokens: int = 0, attention_mask: torch.Tensor | None = None,
                   keep_prefill: bool = False, guides: Sequence[NgramDraft | None] | None = None,
                   guide_margin: float = 0.0, suppress_tokens: Sequence[int] = (), shortlist: Shortlist | None = None,
                   lexicon: TokenLexicon | None = None) -> DraftedOutput:
    """Greedy-decode each row of `inputs_embeds` (B, P, D) with drafted passes.

    `prefix_ids` are the token ids at the end of the prefix (bos + prompt) that the draft's
    context starts from, shared or one list per row; `draft` proposes continuations of prefix_ids +
    new tokens. A finished row leaves the batch (its cache rows are dropped), so stragglers do not
    pay for it. `attention_mask` (B, P): 0 marks padding inside the prefix (rows whose prompts
    differ in length); positions count real tokens only, so each row sees the positions it would
    alone. None: every position is real. `keep_prefill`: the output carries the prefill's KV cache
    and last logits (`PrefillState`) for `score_continuations`. `suppress_tokens` are never
    generated (HF's `suppress_tokens`). The prefill pass also scores each row's first draft (the
    guide's or the table's continuation of its prompt), so a report the drafts know needs no pass
    after it.

    `guides` (one table or None per row) with `guide_margin` > 0: retrieval-guided greedy. Where a
    row's guide (a retrieved report, `radgen.models.memory`) continues the row's last
    `GUIDE_MIN_MATCH`+ tokens, its next token is kept if the decoder's logit for it is within
    `guide_margin` of the greedy choice's (and no processor forbids it); otherwise the greedy token
    wins. So the decoder writes its own text and takes the retrieved report's phrasing where it
    finds that nearly as likely. Each token follows from the context alone, so the text does not
    depend on the draft table or widths; the guide also drafts first, which is where the speed
    comes from. guide_margin 0 (or no guides): the greedy text.

    `shortlist` (CPU, a decoder whose logits are its LM head's, no repetition penalty): picks are
    made over the listed tokens, which the call extends by the table's and guides' tokens, and
    checked against the whole vocabulary when the batch ends (`radgen.models.shortlist`); rows a
    token off the list could have changed are decoded again without it. The same text and
    log-probabilities, fewer head rows a pass.

    `lexicon`: only known words are written (`radgen.models.lexicon`): a processor like the others.
    """
    batch, length = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    embed = decoder.get_input_embeddings()
    rule = _GreedyRule(eos, repetition_penalty, no_repeat_ngram_size, min_new_tokens, suppress_tokens, lexicon)
    cache = growing_cache()  # passes write into spare room, not a copy of the cache each (radgen.models.kv_cache)
    mask = torch.ones(batch, length, dtype=torch.long, device=device) if attention_mask is None else attention_mask.to(device, torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    split = lm_body_and_head(decoder)  # drafted passes: body once, LM head only where the walk reads
    pass_cache = cache_argument(decoder if split is None else split[0], cache)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    active = list(range(batch))  # original row of each batch row still decoding
    # position id of each row's next pass's first token; the prefill counts as a pass whose first
    # token is the prompt's last, its drafts after it
    next_pos = (mask.sum(-1) - 1).tolist()
    lenient = guides is not None and guide_margin > 0
    per_row = bool(prefix_ids) and not isinstance(prefix_ids[0], int)
    row_prefix = [list(p) for p in prefix_ids] if per_row else [list(prefix_ids)] * batch  # type: ignore[arg-type]
    short = _short_head(shortlist, split, draft, guides if lenient else None, eos, repetition_penalty, device,
                        getattr(embed, "weight", None))
    picked_states: list[list[torch.Tensor]] = [[] for _ in range(batch)]  # shortlist: each pick's hidden state
    greedy_picks: list[list[int]] = [[] for _ in range(batch)]  # and the processors' choice there (before a guide)

    def propose(row: int, room: int, width: int) -> list[int]:
        """Row's drafted continuation of prefix + its tokens so far: its guide's, else the table's."""
        if room <= 0:
            return []
        context, n = row_prefix[row] + tokens[row], min(width, room)
        guide = guides[row] if lenient else None  # type: ignore[index]
        proposal = guide.propose(context, n, GUIDE_MIN_MATCH) if guide is not None else []
        return proposal or draft.propose(context, n)

    def scored(inputs: dict, width: int, **options) -> _PassScores:
        """The logits of a pass's last `width` positions (the last fed token and its drafts)."""
        if split is None:
            return _PassScores(logits=decoder(**inputs, **pass_cache, **options).logits[:, -width:])
        hidden = split[0](**inputs, **pass_cache).last_hidden_state[:, -width:]
        if short is not None:
            return _PassScores(hidden=hidden, head=split[1], short=short)
        small = hidden.shape[0] * hidden.shape[1] <= EAGER_HEAD_POSITIONS
        return _PassScores(logits=split[1](hidden)) if small else _PassScores(hidden=hidden, head=split[1])

    # the prefill carries each row's first draft (the guide's or the table's continuation of the
    # prompt), so its last positions are scored like a drafted pass's: one pass fewer a report
    drafts = [propose(row, max_new_tokens - 1, draft_width(batch, draft_tokens, device)) for row in range(batch)]
    width = 1 + max(len(d) for d in drafts)
    draft_ids, draft_mask = _right_padded(drafts, width - 1, pad)
    prompt_mask = mask
    mask = torch.cat([mask, draft_mask.to(device)], dim=1)
    inputs = dict(inputs_embeds=torch.cat([inputs_embeds, embed(draft_ids.to(device)).to(inputs_embeds.dtype)], dim=1),
                  attention_mask=mask, use_cache=True, return_dict=True,
                  position_ids=torch.cat([positions, positions[:, -1:] + 1 + torch.arange(width - 1, device=device)], dim=1))
    keep = {"logits_to_keep": width} if split is None and "logits_to_keep" in inspect.signature(decoder.forward).parameters else {}
    scores = scored(inputs, width, **keep)
    prefill = None
    if keep_prefill:  # a copy of the prompts' part: decoding grows the cache and drops finished rows from it
        prompt_cache = copy.deepcopy(cache)
        if width > 1:
            prompt_cache.crop(-(width - 1))
        prefill = PrefillState(prompt_cache, prompt_mask.clone(), prompt_mask.sum(-1).tolist(), scores.full_at(list(range(batch)), 0),
                               [None] * batch)
    passes = 0
    while True:
        # accept, one position at a time over the rows still walking: a row keeps its drafted token
        # while it equals the greedy choice, and gets one more token either way
        finished, kept, walking = [], [0] * len(active), list(range(len(active)))
        for j in range(scores.width):
            if not walking:
                break
            column = scores.column(walking, j)
            top = column.top()
            chosen, still = [], []
            for k, i in enumerate(walking):
                row = active[i]
                token = rule.choose(functools.partial(column.row, k), top[k], tokens[row])
                if short is not None:
                    greedy_picks[row].append(token)
                guide = guides[row] if lenient else None  # type: ignore[index]
                if guide is not None:  # the guide's next token, from the context alone: the text never depends on the drafts
                    candidate = guide.propose(row_prefix[row] + tokens[row], 1, GUIDE_MIN_MATCH)
                    if candidate and candidate[0] != token and rule.allows(candidate[0], tokens[row]) \
                            and column.value(k, candidate[0]) >= column.value(k, token) - guide_margin:
                        token = candidate[0]
                tokens[row].append(token)
                chosen.append(token)
                if token == eos or len(tokens[row]) >= max_new_tokens:
                    finished.append(i)
                elif j < len(drafts[row]) and token == drafts[row][j]:
                    kept[i] += 1
                    still.append(i)
            if short is not None:  # scored over the whole vocabulary when the batch ends
                states = scores.hidden[torch.tensor(walking, device=scores.hidden.device), j]
                for k, i in enumerate(walking):
                    picked_states[active[i]].append(states[k])
            else:
                for i, value in zip(walking, token_logprobs(column.logits, torch.tensor(chosen, device=column.logits.device)).tolist()):
                    logprobs[active[i]].append(value)
            walking = still
        width = scores.width
        for i, row in enumerate(active):
            mask[i, mask.shape[1] - width + 1 + kept[i]:] = 0  # rejected drafts: masked out for good
            next_pos[row] += 1 + kept[i]
        if finished:
            if prefill is not None:
                keep_decoded(prefill, cache, mask, finished, active)
            ended = set(finished)
            stay = [i for i in range(len(active)) if i not in ended]
            if not stay:
                break
            index = torch.tensor(stay, device=device)
            cache.batch_select_indices(index)
            mask = mask[index]
            active = [active[i] for i in stay]
        # propose and score: [last token, draft...] per row, padded to the widest draft
        per_row = draft_width(len(active), draft_tokens, device)
        for row in active:  # the pass itself always yields one more token
            drafts[row] = propose(row, max_new_tokens - len(tokens[row]) - 1, per_row)
        width = 1 + max(len(drafts[row]) for row in active)
        step_ids, step_mask = _right_padded([[tokens[row][-1]] + drafts[row] for row in active], width, pad)
        step_pos = torch.tensor([next_pos[row] for row in active])[:, None] + torch.arange(width)
        mask = torch.cat([mask, step_mask.to(device)], dim=1)
        scores = scored(dict(inputs_embeds=embed(step_ids.to(device)), attention_mask=mask, position_ids=step_pos.to(device),
                             use_cache=True, return_dict=True), width)
        passes += 1
    out = DraftedOutput(tokens, logprobs, passes, prefill)
    if short is not None:
        # an off-list token the known-words rule forbids there could not have been picked
        allowed = None if lexicon is None else (lambda row, j, token: lexicon.allows(token, tokens[row][:j]))
        scored_picks, missed = score_picks(split[1], short, [torch.stack(s) if s else s for s in picked_states], tokens, greedy_picks,
                                           allowed)
        out.logprobs = scored_picks
        again = [row for row in range(batch) if missed[row]]
        shortlist.record(batch, len(again))  # type: ignore[union-attr]
        if again:
            _decode_again(out, again, decoder, inputs_embeds, draft, row_prefix, eos, pad, max_new_tokens, draft_tokens,
                          repetition_penalty, no_repeat_ngram_size, min_new_tokens, attention_mask, keep_prefill, guides,
                          guide_margin, suppress_tokens, lexicon)
    return out


def _short_head(shortlist: Shortlist | None, split, draft: NgramDraft, guides, eos: int, repetition_penalty: float,  # noqa: ANN001
                device: torch.device, embedding: torch.Tensor | None = None) -> ShortHead | None:
    """The LM head's rows for `shortlist` (extended by the table's, guides' and eos' tokens) where this
    call may pick over them; None: the whole head. `embedding`: the input embedding's weight, which
    a tied head's rows are read from (`Shortlist.head`)."""
    if shortlist is None or split is None or device.type != "cpu" or repetition_penalty != 1.0:
        return None
    shortlist.add(draft.vocabulary)
    for guide in guides or []:
        if guide is not None:
            shortlist.add(guide.vocabulary)
    shortlist.add([eos])
    if not shortlist.usable():
        shortlist.skipped()
        return None
    return shortlist.head(split[1], embedding)


def _decode_again(out: DraftedOutput, rows: list[int], decoder: nn.Module, inputs_embeds: torch.Tensor, draft: NgramDraft,
                  row_prefix: list[list[int]], eos: int, pad: int, max_new_tokens: int, draft_tokens: int, repetition_penalty: float,
                  no_repeat_ngram_size: int, min_new_tokens: int, attention_mask: torch.Tensor | None, keep_prefill: bool,
                  guides: Sequence[NgramDraft | None] | None, guide_margin: float, suppress_tokens: Sequence[int],
                  lexicon: TokenLexicon | None) -> None:
    """Decode `rows` of a shortlisted call again over the whole vocabulary, in place of their picks in `out`."""
    index = torch.tensor(rows, device=inputs_embeds.device)
    again = drafted_greedy(decoder, inputs_embeds[index], draft, [row_prefix[r] for r in rows], eos, pad, max_new_tokens,
                           draft_tokens, repetition_penalty, no_repeat_ngram_size, min_new_tokens,
                           attention_mask=None if attention_mask is None else attention_mask[index], keep_prefill=keep_prefill,
                           guides=None if guides is None else [guides[r] for r in rows], guide_margin=guide_margin,
                           suppress_tokens=suppress_tokens, lexicon=lexicon)
    for k, row in enumerate(rows):
        out.token_ids[row], out.logprobs[row] = again.token_ids[k], again.logprobs[k]
        if out.prefill is not None and again.prefill is not None:
            out.prefill.decoded[row] = again.prefill.decoded[k]
    out.passes += again.passes + 1  # the prefill again
