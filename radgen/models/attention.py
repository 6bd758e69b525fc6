"""Grouped-query attention without copying keys and values: the decoder's attention at CPU inference.

SmolLM2-135M (and Llama-family decoders generally) have fewer key/value heads than query heads (3
and 9). transformers' SDPA path copies each key/value head once per query head that reads it
(`repeat_kv`) whenever there is an attention mask, which radgen always passes (left-padded prompts,
masked-out rejected drafts), and then runs the kernel on 9 small heads of a few queries each. Here
the queries that share a key/value head are stacked into one head instead ((B, 9, Q, D) → (B, 3,
3·Q, D), the mask repeated to match), so nothing is copied and each kernel call has 3x the queries.
Each query still attends to the same keys under the same mask, so the result is the same
computation; on torch's CPU flash kernel it is bit-identical (tests/models/test_attention.py).
On a drafted pass at batch 32 (5 queries over ~100 keys, bf16, 2 threads) 0.65 ms against 2.05 ms a
layer (benchmarks/cpu_kernels.py; docs/benchmarks.md, Performance).

What this does not cover goes to transformers' own SDPA function unchanged: one query (transformers
already folds the heads then), no mask (its causal kernel path), per-head masks, dropout, position
biases and soft-capping.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GROUPED_SDPA = "radgen_grouped_sdpa"


def grouped_query_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, stacked_masks: dict | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function (the `AttentionInterface` signature): query (B, H, Q, D), key and
    value (B, KV, K, D), mask (B, 1, Q, K) or None; returns ((B, Q, H, D), None). `stacked_masks`: a
    dict a caller running every layer on the same mask passes to each call (radgen.models.lean_forward),
    so the stacked mask is made once a pass, not once a layer."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, queries, dim = query.shape
    plain = (groups == 1 or queries == 1 or attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[1] != 1
             or dropout or key.shape[1] * groups != heads or any(kwargs.get(k) is not None for k in ("position_bias", "softcap"))
             or kwargs.get("output_attentions"))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    made = {} if stacked_masks is None else stacked_masks
    mask = made.get((groups, query.dtype))
    if mask is None:
        mask = made[(groups, query.dtype)] = stacked_mask(attention_mask, groups, query.dtype)
    kv_heads = key.shape[1]
    # query head h reads key/value head h // groups (repeat_kv's order): heads kv*groups..kv*groups+groups-1
    # become one head whose queries are those heads' queries one after another
    stacked = query.reshape(batch, kv_heads, groups * queries, dim)
    out = F.scaled_dot_product_attention(stacked, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(out.shape[0], heads, queries, dim).transpose(1, 2).contiguous(), None


def stacked_mask(attention_mask: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """The (B, 1, Q, K) mask (bool: True attends; or additive) for the stacked queries, (B, 1,
    groups·Q, K), additive in `dtype` (0 or -inf: what SDPA makes of a bool mask itself)."""
    rows, _, queries, keys = attention_mask.shape  # the mask's own widths: it may broadcast
    mask = attention_mask[:, :, None].expand(rows, 1, groups, queries, keys).reshape(rows, 1, groups * queries, keys)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask.logical_not(), float("-inf"))
    return mask


def register() -> str:
    """Make `GROUPED_SDPA` a name transformers models accept (`set_attn_implementation`); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_SDPA, grouped_query_sdpa)
    AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)  # the same masks SDPA gets
    return GROUPED_SDPA


def use_grouped_attention(base: nn.Module) -> bool:
    """Switch a transformers model (not a peft wrapper) that runs SDPA with grouped key/value heads to
    `grouped_query_sdpa`; True if switched."""
    config = getattr(base, "config", None)
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not heads or not kv_heads or heads == kv_heads \
            or not hasattr(base, "set_attn_implementation"):
        return False
    base.set_attn_implementation(register())
    return True
