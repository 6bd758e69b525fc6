"""A lean inference forward for Llama decoder bodies: transformers' arithmetic without its per-layer Python.

Why: a decoding pass of radgen-small's SmolLM2-135M on 2 CPU cores at batch 1 costs 50-70 ms
however few positions it has, and drafted decoding runs about 7 a report. Much of that fixed cost
is not arithmetic: `LlamaModel.forward` walks 30 layers x 7 Linears through module calls with their
hook checks, transformers' kwarg-deprecation and output-capturing wrappers, radgen's padding-free
hooks on 5 modules a layer and `PackedLinear`'s own checks. Here one function walks the same modules'
weights and runs the same torch ops in the same order (RMSNorm in fp32, rotary embedding from the
body's own `rotary_emb`, the attention function the config names, the mask from transformers'
`create_causal_mask`, the KV cache's own `update`), so the real positions' hidden states are the
ones `LlamaModel.forward` returns, bit for bit where the Linear kernels see the same rows
(tests/models/test_lean_forward.py). Fewer ops than transformers runs, with the same arithmetic:
radgen's grouped-query attention gets its stacked mask once a pass instead of once a layer, fused
projections rotate the queries' and keys' heads in one go (`_rotate`), and fp32 RMSNorm is torch's
one-call `rms_norm` (the same ops inside). Measured pass costs and decoding speed: docs/benchmarks.md,
Performance, "A lean forward for the decoder body" and "A KV cache that grows in place".

Padded positions (a 0 in the new columns of the 2-D attention mask: left-padded prompts, drafts
shorter than the widest) are dropped once per pass instead of by hooks around each module
(`radgen.models.padding_free`'s idea): every position-wise op runs on the real positions only, and
queries, keys and values are scattered back into the padded layout the mask and the cache expect.
A padded position's output is zeros (it is never read, and its keys are never attended to).

Installed by `radgen.models.fast.prepare_for_inference` on CPU (unless RADGEN_NO_CPU_FAST_PATHS=1
or RADGEN_LEAN_FORWARD=0) by making the body a `LeanLlamaModel`, so every caller (drafted passes,
re-scoring, HF `generate` for beam search) gets it through the module's `__call__`, whose hooks
still run. Anything it does not cover goes to transformers' forward unchanged: autograd recording
(training, gradient explanations), attention or hidden-state outputs (attention maps), tuple
outputs, cache classes other than `DynamicCache`, 4-D masks, and model types other than Llama's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import LlamaModel, eager_attention_forward

from radgen.models.attention import grouped_query_sdpa
from radgen.models.half_weights import HalfWeightLinear
from radgen.models.packed_linear import PackedLinear

# transformers 5 names the output's cache field `cache`, 4.x `past_key_values`
_CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

# model types whose body is transformers' LlamaModel layout (embed_tokens, layers of input_layernorm
# → self_attn(q/k/v/o_proj) → post_attention_layernorm → mlp(gate/up/down_proj), norm, rotary_emb)
SUPPORTED_MODEL_TYPES = {"llama"}
# keyword arguments the lean forward honours; a call with any other (or one of these set otherwise)
# takes transformers' forward
_HANDLED = {"input_ids", "inputs_embeds", "attention_mask", "position_ids", "cache", "past_key_values", "use_cache", "return_dict",
            "output_attentions", "output_hidden_states"}


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for x (N, in): the kernel itself for plain, packed and fp16-weight Linears (no module
    call), the module for anything else (int8, LoRA-wrapped: their hooks and checks stay)."""
    kind = type(layer)
    if kind is PackedLinear or kind is HalfWeightLinear:
        return layer.rows(x)
    if kind is nn.Linear:
        return F.linear(x, layer.weight, layer.bias)
    return layer(x)


class FusedPart(nn.Module):
    """One of several Linears of the same input folded into one (`fuse_projections`): its columns of
    the fused layer's output. The lean forward runs the fused layer once for all its parts; a call
    of one part alone (transformers' forward, for what the lean one does not cover) runs the fused
    layer and keeps its own columns, the same numbers at a few times the cost."""

    def __init__(self, fused: nn.Module, start: int, stop: int):
        super().__init__()
        self.fused, self.start, self.stop = fused, start, stop
        self.in_features, self.out_features = fused.in_features, stop - start
        self.training = fused.training

    @property
    def weight(self) -> torch.Tensor:
        return self.fused.weight[self.start:self.stop]

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.fused.bias is None else self.fused.bias[self.start:self.stop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)[..., self.start:self.stop]

    def extra_repr(self) -> str:
        return f"columns {self.start}:{self.stop} of a fused {type(self.fused).__name__}"


def _fuse(owner: nn.Module, names: tuple[str, ...], pack: Callable[[nn.Linear], bool] | None, half: bool = False) -> bool:
    """Replace `owner`'s Linears `names` (same input, plain or packed, same dtype, all with or all
    without bias) by `FusedPart`s of one oneDNN-packed Linear over their stacked weights, where
    `pack` says packing that shape pays on this CPU (its own timing: the parts' shapes may time
    otherwise), or of one `HalfWeightLinear` (half=True: fp32 weights only, no timing); True if
    fused. Unpacked, the parts stay: MKL's plain kernels ran the fused products slower than the
    parts (`decoder_pass_cost.py`, lean-unpacked; docs/benchmarks.md)."""
    layers = [getattr(owner, name) for name in names]
    kinds = {type(layer) for layer in layers}
    if (pack is None and not half) or kinds - {nn.Linear, PackedLinear} or len({layer.in_features for layer in layers}) != 1 \
            or len({layer.bias is None for layer in layers}) != 1:
        return False
    weights = [layer.weight.detach() for layer in layers]
    if len({w.dtype for w in weights}) != 1 or weights[0].device.type != "cpu" or (half and weights[0].dtype != torch.float32):
        return False
    bias = None if layers[0].bias is None else torch.cat([layer.bias.detach() for layer in layers])
    if half:
        fused = HalfWeightLinear(torch.cat(weights), bias)
    else:
        shape = nn.Linear(layers[0].in_features, sum(w.shape[0] for w in weights), bias=bias is not None, device="meta",
                          dtype=weights[0].dtype)
        if not pack(shape):  # decided on the shape alone, before any weight is copied
            return False
        fused = PackedLinear.from_weight(torch.cat(weights), bias)  # the layout for PACK_ROWS_HINT rows, as `pack` timed it
    fused.training = layers[0].training  # the mode of the layers it replaces (PackedLinear's note)
    start = 0
    for name, w in zip(names, weights):
        setattr(owner, name, FusedPart(fused, start, start + w.shape[0]))
        start += w.shape[0]
    return True


def fuse_projections(body: nn.Module, pack: Callable[[nn.Linear], bool] | None = None, half: bool = False) -> int:
    """Fold each layer's q/k/v projections into one packed Linear and its MLP's gate/up into another
    (`FusedPart`s keep the old names), for the shapes where `pack` says packing pays (None: none),
    or into fp16-weight Linears (half=True, `radgen.models.half_weights`); returns how many groups were fused.

    Why: the lean forward then runs 4 matrix products a layer instead of 7: fewer kernel calls, each
    with its fixed cost, and larger products. Each output column is the same dot product over the
    same input, so the results are the same (the tests check them against transformers' forward;
    `decoder_pass_cost.py --forms lean,lean-unfused` times the difference). Same memory: the fused
    weights replace the parts'."""
    decided: dict[tuple, bool] = {}

    def pays(layer: nn.Linear) -> bool:  # once per shape, not per layer
        key = (layer.out_features, layer.in_features, layer.weight.dtype)
        if key not in decided:
            decided[key] = pack(layer)  # type: ignore[misc]
        return decided[key]

    fused = 0
    for layer in body.layers:
        fused += _fuse(layer.self_attn, ("q_proj", "k_proj", "v_proj"), pays if pack is not None else None, half)
        fused += _fuse(layer.mlp, ("gate_proj", "up_proj"), pays if pack is not None else None, half)
    return fused


def _fused_parent(owner: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    """The fused Linear whose adjacent columns, in order from the first, are `owner`'s parts `names`;
    None if they are not. Remembered on `owner` while those parts stay the same (asked per layer per pass)."""
    parts = tuple(owner._modules.get(name) for name in names)  # the dict itself: nn.Module's __getattr__ is slower
    known = owner.__dict__.get("_lean_fused_parent")
    if known is not None and known[0] == names and all(a is b for a, b in zip(known[1], parts)):
        return known[2]
    fused = None
    if all(type(part) is FusedPart for part in parts) and len({id(part.fused) for part in parts}) == 1 and parts[0].start == 0 \
            and [part.start for part in parts[1:]] == [part.stop for part in parts[:-1]]:
        fused = parts[0].fused
    owner.__dict__["_lean_fused_parent"] = (names, parts, fused)
    return fused


def _projections(owner: nn.Module, names: tuple[str, ...], x: torch.Tensor) -> list[torch.Tensor]:
    """`owner.<name>(x)` for each name: one product when they are the parts of one fused Linear, in order."""
    fused = _fused_parent(owner, names)
    parts = [getattr(owner, name) for name in names]
    if fused is not None:
        out = _linear(fused, x)
        return [out[:, part.start:part.stop] for part in parts]
    return [_linear(part, x) for part in parts]


def _rotated_qkv(attention: nn.Module, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries and keys with the rotary embedding applied, and values, each (N, heads, head_dim).
    Fused projections rotate the queries' and keys' heads in one go (their columns are adjacent):
    the same arithmetic on each element as rotating them apart, a layer's rotation ops once, not twice."""
    head_dim, positions = attention.head_dim, x.shape[0]
    fused = _fused_parent(attention, ("q_proj", "k_proj", "v_proj"))
    if fused is not None:
        out = _linear(fused, x)
        query_heads, key_end = attention.q_proj.stop // head_dim, attention.k_proj.stop
        rotated = _rotate(out[:, :key_end].reshape(positions, -1, head_dim), cos, signed_sin)
        return rotated[:, :query_heads], rotated[:, query_heads:], out[:, key_end:].reshape(positions, -1, head_dim)
    q, k, v = _projections(attention, ("q_proj", "k_proj", "v_proj"), x)
    return (_rotate(q.reshape(positions, -1, head_dim), cos, signed_sin), _rotate(k.reshape(positions, -1, head_dim), cos, signed_sin),
            v.reshape(positions, -1, head_dim))


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """LlamaRMSNorm.forward's ops, in its order (fp32 statistics, scaled in the input's dtype). In fp32,
    torch's `rms_norm`, whose CPU kernel is those ops in that order (bit-identical; one call, not six)."""
    dtype = x.dtype
    if dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.variance_epsilon)
    x32 = x.to(torch.float32)
    variance = x32.pow(2).mean(-1, keepdim=True)
    return norm.weight * (x32 * torch.rsqrt(variance + norm.variance_epsilon)).to(dtype)


def _signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """`sin` with its first half negated, for `_rotate` (made once a pass)."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb's arithmetic, x * cos + rotate_half(x) * sin, with rotate_half(x) * sin
    taken as roll(x) * `_signed_sin(sin)`: (-a) * b and a * (-b) are the same float, so the same
    values in four ops instead of seven."""
    return (x * cos) + (x.roll(x.shape[-1] // 2, -1) * signed_sin)


def _mask_api_ok() -> bool:
    """transformers' `create_causal_mask` takes the keyword arguments this module passes (5.x)."""
    try:
        from transformers.masking_utils import create_causal_mask
    except ImportError:
        return False
    wanted = {"config", "inputs_embeds", "attention_mask", "cache", "position_ids"}
    return wanted <= set(inspect.signature(create_causal_mask).parameters)


def supports_lean_forward(body: nn.Module) -> bool:
    """Whether `body` (an HF decoder body, e.g. `LlamaModel`) has the layout and config the lean forward assumes."""
    config = getattr(body, "config", None)
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or not _mask_api_ok():
        return False
    if getattr(config, "pretraining_tp", 1) != 1 or not all(hasattr(body, name) for name in ("layers", "norm", "rotary_emb")):
        return False
    needed = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.act_fn")
    for layer in body.layers:
        for name in needed:
            owner = layer
            for part in name.split("."):
                owner = getattr(owner, part, None)
            if owner is None:
                return False
    return True


def _lean_call(kwargs: dict[str, Any]) -> bool:
    """Whether this call is one the lean forward covers."""
    if torch.is_grad_enabled() or set(kwargs) - _HANDLED:
        return False
    if kwargs.get("output_attentions") or kwargs.get("output_hidden_states") or kwargs.get("return_dict") is False:
        return False
    if (kwargs.get("input_ids") is None) == (kwargs.get("inputs_embeds") is None):
        return False
    mask = kwargs.get("attention_mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
        return False
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is None or type(cache) is DynamicCache


def lean_forward(body: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor | None, cache: Any, use_cache: bool) -> tuple[torch.Tensor, Any]:
    """(last hidden state (B, W, D), cache) for `inputs_embeds` (B, W, D) after `cache`'s positions, as
    `LlamaModel.forward` computes them; padded positions (0 in the mask's last W columns) come out as zeros."""
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    config = body.config
    if use_cache and cache is None:
        cache = DynamicCache(config=config)
    rows, width, hidden_size = inputs_embeds.shape
    if position_ids is None:  # as LlamaModel.forward: after the positions already cached
        past = cache.get_seq_length() if cache is not None else 0
        position_ids = (torch.arange(width, device=inputs_embeds.device) + past)[None]
    mask = create_causal_mask(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache,
                              position_ids=position_ids)
    cos, sin = body.rotary_emb(inputs_embeds, position_ids=position_ids)  # (B or 1, W, head_dim)
    cos, signed_sin = (t.expand(rows, -1, -1).reshape(rows * width, 1, -1) for t in (cos, _signed_sin(sin)))
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)

    # the real positions, once per pass: every position-wise op below runs on these rows only
    real = None
    if attention_mask is not None:
        new = attention_mask[:, attention_mask.shape[1] - width:].reshape(-1)
        if not bool(new.all()):
            real = new.nonzero().squeeze(1)
    h = inputs_embeds.reshape(rows * width, hidden_size)
    if real is not None:
        h, cos, signed_sin = h.index_select(0, real), cos.index_select(0, real), signed_sin.index_select(0, real)

    def padded(x: torch.Tensor) -> torch.Tensor:
        """(N, heads, head_dim) of the real positions → (B, heads, W, head_dim), zeros at padding."""
        if real is not None:
            x = x.new_zeros(rows * width, *x.shape[1:]).index_copy_(0, real, x)
        return x.view(rows, width, *x.shape[1:]).transpose(1, 2)

    # grouped-query attention makes its stacked mask once a pass rather than once a layer (radgen.models.attention)
    shared = {"stacked_masks": {}} if attend is grouped_query_sdpa else {}
    for layer in body.layers[: config.num_hidden_layers]:
        attention, mlp = layer.self_attn, layer.mlp
        x = _rms_norm(h, layer.input_layernorm)
        q, k, v = _rotated_qkv(attention, x, cos, signed_sin)
        q, k, v = padded(q), padded(k), padded(v)
        if cache is not None:
            k, v = cache.update(k, v, attention.layer_idx)
        out, _ = attend(attention, q, k, v, mask, dropout=0.0, scaling=attention.scaling, **shared)
        out = out.reshape(rows * width, -1)  # (B, W, heads, head_dim) → one row a position
        if real is not None:
            out = out.index_select(0, real)
        h = h + _linear(attention.o_proj, out)
        x = _rms_norm(h, layer.post_attention_layernorm)
        gate, up = _projections(mlp, ("gate_proj", "up_proj"), x)
        h = h + _linear(mlp.down_proj, mlp.act_fn(gate) * up)
    h = _rms_norm(h, body.norm)
    if real is not None:
        h = h.new_zeros(rows * width, hidden_size).index_copy_(0, real, h)
    return h.view(rows, width, hidden_size), cache


class LeanLlamaModel(LlamaModel):
    """`LlamaModel` whose forward runs `lean_forward` for the calls it covers and transformers' own for
    the rest. `use_lean_forward` turns a loaded body into one (its class only: same weights, same
    modules, same hooks); a class, not a patched method, so deep copies and pickles keep it."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if args or not _lean_call(kwargs):
            return super().forward(*args, **kwargs)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = self.embed_tokens(kwargs["input_ids"])
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        use_cache = kwargs.get("use_cache")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        hidden, cache = lean_forward(self, embeds, kwargs.get("attention_mask"), kwargs.get("position_ids"), cache, use_cache)
        return BaseModelOutputWithPast(last_hidden_state=hidden, **{_CACHE_FIELD: cache if use_cache else None})


def use_lean_forward(body: nn.Module, fuse: bool = True, pack: Callable[[nn.Linear], bool] | None = None,
                     half: bool = False) -> bool:
    """Make `body` (an HF decoder body) a `LeanLlamaModel` where it is exactly transformers'
    `LlamaModel` with the layout the lean forward assumes, its projections fused (`fuse_projections`)
    unless fuse=False, where `pack(layer)` says a packed Linear of the fused shape pays (None: no
    fusing; `radgen.models.fast` passes its timing, `layer_packing_pays`) or, half=True, into
    fp16-weight Linears; True if it now is one."""
    if type(body) is not LlamaModel or not supports_lean_forward(body):
        return False
    if fuse:
        fuse_projections(body, pack, half)
    body.__class__ = LeanLlamaModel
    try:  # transformers 5 looks up which outputs a model can record (attention maps) by its class
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

        _CAN_RECORD_REGISTRY[body] = body._can_record_outputs
    except ImportError:  # 4.x records them in the forward itself
        pass
    return True
