"""Scoring text the decoder did not write itself, on KV caches drafted decoding left behind.

A grounded model's report is edited after decoding (`radgen.models.consistency`), and every token of
the returned text must carry the model's own log-probability under its prompt (confidences are
computed from them). Two caches spare most of that teacher-forced pass:

- `score_continuations`: the prefill's cache (visual tokens and prompt, `PrefillState`), for texts
  that differ from the decoded one from their first token on;
- `score_tails`: each row's cache as decoding left it (`DecodedRow`), for edits that keep the
  report's first decoded tokens (a sentence added at the end, one reworded or dropped further on):
  only what follows them is scored (at batch 32 about half the re-scored positions; docs/benchmarks.md,
  Performance).

Both give the same values as a teacher-forced pass over prefix + text, up to summation order
(tests/generate/test_speculative.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from radgen.models.fast import base_model, lm_body_and_head, split_by_counts, token_logprobs


@dataclass
class DecodedRow:
    """One finished row's KV cache as decoding left it, holes removed: the real positions of its
    prefix, then every token it generated but the last (a row's last token is never fed back)."""

    keys: list[torch.Tensor]  # per layer, (key/value heads, positions, head size)
    values: list[torch.Tensor]
    prefix_length: int  # real positions of the prefix; the generated tokens' positions follow


@dataclass
class PrefillState:
    """What drafted decoding leaves behind for scoring other texts after the same prefixes: the
    prefill's cache (`score_continuations`: on 96 test studies at batch 32, re-scoring took 1.5 s
    instead of 2.0 s against a pass that runs visual tokens and prompt again) and, in `decoded[i]`,
    row i's cache after decoding (`score_tails`)."""

    cache: Any  # the KV cache of the (B, P) prefixes, a copy taken before decoding grew it
    mask: torch.Tensor  # (B, P) attention mask of the prefixes, 0 on left padding
    next_positions: list[int]  # position id of the first token after each row's prefix
    last_logits: torch.Tensor  # (B, vocabulary) next-token logits after each prefix
    decoded: list[DecodedRow | None] = field(default_factory=list)


def cache_argument(module: nn.Module, cache: Any) -> dict:
    """The KV cache as keyword argument: transformers renamed `past_key_values` to `cache` (5.2x); a
    peft wrapper's forward takes **kwargs, so its base model's signature decides."""
    return {"cache": cache} if "cache" in inspect.signature(base_model(module).forward).parameters else {"past_key_values": cache}


def keep_decoded(prefill: PrefillState, cache: Any, mask: torch.Tensor, finished: Sequence[int], active: Sequence[int]) -> None:
    """Copy the finished batch rows' KV caches (batch row i is original row active[i]) into
    `prefill.decoded` before they leave the batch; `mask` (rows, cache positions) marks the real ones."""
    for i in finished:
        real = mask[i].bool()
        keys = [layer.keys[i][:, real] for layer in cache.layers]
        values = [layer.values[i][:, real] for layer in cache.layers]
        prefill.decoded[active[i]] = DecodedRow(keys, values, prefill.next_positions[active[i]])


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _score_on_cache(decoder: nn.Module, cache: Any, cache_mask: torch.Tensor, starts: Sequence[int], fed: Sequence[Sequence[int]],
                    targets: Sequence[Sequence[int]], pad: int) -> list[list[float]]:
    """One decoder pass over `fed[i]` (row i of `cache`, first position id `starts[i]`), right-padded;
    log p of `targets[i][j]` at fed position j. The LM head runs on the fed positions only."""
    device = cache_mask.device
    steps = max(len(tokens) for tokens in fed)
    step_ids = torch.full((len(fed), steps), pad, dtype=torch.long)
    step_mask = torch.zeros(len(fed), steps, dtype=torch.long)
    for row, tokens in enumerate(fed):
        step_ids[row, : len(tokens)] = torch.tensor(list(tokens), dtype=torch.long)
        step_mask[row, : len(tokens)] = 1
    inputs = dict(inputs_embeds=decoder.get_input_embeddings()(step_ids.to(device)), use_cache=True, return_dict=True,
                  attention_mask=torch.cat([cache_mask, step_mask.to(device)], dim=1),
                  position_ids=(torch.tensor(list(starts), dtype=torch.long)[:, None] + torch.arange(steps)).to(device))
    real = step_mask.to(device).bool()  # row-major: the picked positions follow the texts' order
    split = lm_body_and_head(decoder)
    if split is None:
        picked = decoder(**inputs, **cache_argument(decoder, cache)).logits[real]
    else:
        picked = split[1](split[0](**inputs, **cache_argument(split[0], cache)).last_hidden_state[real])
    values = token_logprobs(picked, torch.tensor([t for tokens in targets for t in tokens], device=device)).tolist()
    return split_by_counts(values, [len(tokens) for tokens in targets])


@torch.no_grad()
def score_continuations(decoder: nn.Module, prefill: PrefillState, rows: Sequence[int], texts: Sequence[Sequence[int]],
                        pad: int) -> list[list[float]]:
    """log p (fp32 log-softmax of the raw logits) of each token of `texts[i]` after prefix `rows[i]`
    of `prefill`, given the tokens before it: one decoder pass over the texts only, on the prefill's
    KV cache (consumed: a PrefillState scores once). The same values as a teacher-forced pass over
    prefix + text (`fast.label_position_logprobs`), up to summation order."""
    if prefill.cache is None:
        raise RuntimeError("this PrefillState has already been used: score_continuations consumes its cache")
    cache, prefill.cache = prefill.cache, None
    device = prefill.mask.device
    out = [token_logprobs(prefill.last_logits[i][None], torch.tensor(ids[:1], device=device)).tolist() if ids else []
           for i, ids in zip(rows, texts)]
    if max((len(ids) - 1 for ids in texts), default=0) <= 0:  # a text's last token predicts nothing scored
        return out
    index = torch.tensor(list(rows), dtype=torch.long, device=device)
    cache.batch_select_indices(index)
    rest = _score_on_cache(decoder, cache, prefill.mask[index], [prefill.next_positions[i] for i in rows],
                           [ids[:-1] for ids in texts], [ids[1:] for ids in texts], pad)
    return [first + more for first, more in zip(out, rest)]


@torch.no_grad()
def score_tails(decoder: nn.Module, decoded: Sequence[DecodedRow], same: Sequence[int], texts: Sequence[Sequence[int]],
                pad: int) -> list[list[float]]:
    """log p of each token of `texts[i][same[i]:]` given row i's prefix and `texts[i][:same[i]]`, for
    rows whose generated tokens began with `texts[i][:same[i]]` (1 <= same[i] < len(texts[i])): one
    decoder pass over the changed tails only, on each row's own decoding cache cut after the prefix
    and `texts[i][:same[i] - 1]` (the pass feeds from `texts[i][same[i] - 1]` on)."""
    keep = [row.prefix_length + n - 1 for row, n in zip(decoded, same)]  # cached positions each row keeps
    if any(n < 1 or n >= len(ids) for n, ids in zip(same, texts)) or any(k > row.keys[0].shape[1] for k, row in zip(keep, decoded)):
        raise ValueError("score_tails needs 1 <= same[i] < len(texts[i]) tokens the row actually decoded")
    from transformers import DynamicCache

    rows, width = len(decoded), max(keep)
    cache = DynamicCache()
    for layer in range(len(decoded[0].keys)):  # left-padded, like the prefill's shorter prompts
        keys = decoded[0].keys[layer].new_zeros(rows, decoded[0].keys[layer].shape[0], width, decoded[0].keys[layer].shape[2])
        values = torch.zeros_like(keys)
        for r, (row, k) in enumerate(zip(decoded, keep)):
            keys[r, :, width - k:] = row.keys[layer][:, :k]
            values[r, :, width - k:] = row.values[layer][:, :k]
        cache.update(keys, values, layer)
    cache_mask = torch.zeros(rows, width, dtype=torch.long, device=decoded[0].keys[0].device)
    for r, k in enumerate(keep):
        cache_mask[r, width - k:] = 1
    return _score_on_cache(decoder, cache, cache_mask, keep, [ids[n - 1:-1] for ids, n in zip(texts, same)],
                           [ids[n:] for ids, n in zip(texts, same)], pad)
