"""Skip padded positions in a decoder's position-wise layers: the decoder's MLPs and attention
projections at CPU inference run on the real positions of a call only.

Why: a batch's rows rarely have the same length. Prompts naming different findings are left-padded
to the longest, a re-scored report is padded to the longest edited one, and a drafted pass pads
each row's draft to the widest. On 96 validation studies at batch 32 about a quarter of the prefill
and re-scoring positions were padding, and on 2 CPU cores a position costs the same real or not.
The MLP (three quarters of a Llama block's weights) and the q/k/v/o projections treat each position
on its own, so they can run on the real positions gathered into one row and scatter the results
back; attention, which mixes positions, still sees the padded layout its mask and KV cache expect.

Which positions are real is read from the call itself: HF decoders take an `attention_mask` over
past and new positions, and its last columns mark the new ones (0: padding, never attended to, its
output never read). Padding rows come out as zeros instead of computed garbage, so nothing
non-finite can reach attention through them. A call whose positions are nearly all real
(`COMPACT_BELOW`) runs unchanged: the gather and scatter would cost more than they save. Real
positions get the same per-position arithmetic as before (tests/models/test_padding_free.py).
Inference only: nothing changes while autograd records (training, gradient explanations).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

# compact only when fewer than this share of a call's positions are real: the gather and scatter cost
# a few percent of a call, so a call with almost no padding would only pay them (benchmarks/cpu_kernels.py:
# a drafted pass 7/8 real ran 1.08x, prefill and re-scoring ~3/4 real 1.06-1.16x; docs/benchmarks.md)
COMPACT_BELOW = 0.9
# decoders whose blocks have a dense, position-wise `mlp` and `self_attn.*_proj` Linear layers
SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "phi3"}

# (flat indices of the real positions, rows, width) of the body call running in this thread, or None.
# A ContextVar, not an attribute: the server decodes from several threads.
_REAL_POSITIONS: ContextVar[tuple[torch.Tensor, int, int] | None] = ContextVar("radgen_real_positions", default=None)


def new_positions_mask(kwargs: dict[str, Any]) -> torch.Tensor | None:
    """Which of an HF decoder call's new positions are real: (rows, width), 1 real and 0 padding,
    from the last columns of its 2-D `attention_mask` over past and new positions (no mask: all
    real). None where the call's keyword arguments do not say (no `inputs_embeds` / `input_ids`,
    a 4-D mask)."""
    fed = next((kwargs[name] for name in ("inputs_embeds", "input_ids") if kwargs.get(name) is not None), None)
    if fed is None:
        return None
    rows, width = fed.shape[0], fed.shape[1]
    mask = kwargs.get("attention_mask")
    if mask is None:
        return torch.ones(rows, width, dtype=torch.long, device=fed.device)
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == rows and mask.shape[1] >= width:
        return mask[:, mask.shape[1] - width:]
    return None


def _enter_body(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    state = None
    new = new_positions_mask(kwargs) if not torch.is_grad_enabled() else None
    if new is not None:
        rows, width = new.shape
        real = new.reshape(-1).nonzero().squeeze(1)
        if real.numel() < COMPACT_BELOW * new.numel():
            state = (real, rows, width)
    _REAL_POSITIONS.set(state)


def _leave_body(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
    _REAL_POSITIONS.set(None)


def _gather(module: nn.Module, args: tuple) -> tuple | None:
    state = _REAL_POSITIONS.get()
    if state is None or not args:
        return None
    real, rows, width = state
    x = args[0]
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] != rows or x.shape[1] != width:
        return None
    return (x.reshape(rows * width, x.shape[2]).index_select(0, real)[None], *args[1:])


def _scatter(module: nn.Module, args: tuple, output: Any) -> Any:
    state = _REAL_POSITIONS.get()
    if state is None or not isinstance(output, torch.Tensor):
        return None
    real, rows, width = state
    if output.dim() != 3 or output.shape[0] != 1 or output.shape[1] != real.numel():
        return None  # `_gather` left this call alone
    full = output.new_zeros(rows * width, output.shape[2])
    full.index_copy_(0, real, output[0])
    return full.view(rows, width, output.shape[2])


def use_padding_free_layers(body: nn.Module) -> int:
    """Make the MLPs and attention projections of an HF decoder body (the model under the LM head,
    e.g. `LlamaModel`) skip padded positions; returns how many modules now do (0: unsupported model
    type, or already done). Hooks only: the modules, their weights and their names stay as they are."""
    config = getattr(body, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or getattr(body, "_radgen_padding_free", False):
        return 0
    hooked = []
    for name, module in body.named_modules():
        parent, _, own = name.rpartition(".")
        # an attention projection whatever form it takes (nn.Linear, oneDNN-packed, int8, LoRA-wrapped):
        # each maps one position's hidden state to one output row
        attention_projection = parent.endswith("self_attn") and own.endswith("_proj")
        if own == "mlp" or attention_projection:
            hooked.append(module)
    if not hooked:
        return 0
    body.register_forward_pre_hook(_enter_body, with_kwargs=True)
    body.register_forward_hook(_leave_body, with_kwargs=True, always_call=True)  # also when the call raises
    for module in hooked:
        module.register_forward_pre_hook(_gather)
        module.register_forward_hook(_scatter)
    body._radgen_padding_free = True
    return len(hooked)
