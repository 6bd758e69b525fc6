"""int8 decoder inference on CPU: channel smoothing (SmoothQuant), then torch dynamic quantization.

torch's dynamic quantization (`quantize_dynamic`) gives each Linear's input ONE scale per call,
over all its channels, and on x86 only 7 bits of it (`reduce_range`). A causal LM's hidden states
carry a few channels far larger than the rest, so that one scale leaves the other channels a
handful of levels: on radgen-small's SmolLM2 decoder 3 of 302 validation reports stayed the same
as fp32 and BLEU-4 fell from 0.178 to 0.136 ("What is an x-x ."; docs/benchmarks.md, int8).

Smoothing (Xiao et al., 2023, "SmoothQuant") moves that range from the activations into the
weights, which are quantized per output channel: for an input channel j with activation range a_j
and weight range w_j it divides the activation by s_j = a_j^alpha / w_j^(1 - alpha) and multiplies
the weight's column j by s_j, which leaves the product unchanged in exact arithmetic. The division
is folded into the op before the Linear (the RMSNorm weight before q/k/v and gate/up, the final
norm before the LM head), so inference does no extra work. The activation ranges come from a
calibration run on training studies (`record_activation_ranges`, `radgen model calibrate-int8`),
stored in the model folder (ACTIVATION_RANGES_FILE, safetensors).

Which Linears stay fp32: the MLP's down projection. Its input (gate * up) has the widest outliers
and no norm to fold a scale into; keeping it fp32 kept more validation reports equal to fp32 in
quick scratch trials (a setting, not a reported result; docs/benchmarks.md). Decoders other than the Llama family
(Llama, Mistral, Qwen2, SmolLM) are quantized without smoothing.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from radgen.errors import DataError
from radgen.models.peft import base_model

ACTIVATION_RANGES_FILE = "int8_activation_ranges.safetensors"
# how far smoothing moves the range into the weights: 0.8 kept more validation reports equal to
# fp32 than the paper's default 0.5 in quick scratch trials (a setting, not a reported result)
SMOOTHING_ALPHA = 0.8
KEEP_FLOAT = ("down_proj",)
SMOOTHED_INPUTS = ("self_attn.q_proj", "mlp.gate_proj")
_SMOOTHED_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def _decoder_parts(decoder: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(body, LM head) of a Llama-family causal LM, else None."""
    base = base_model(decoder)
    model_type = getattr(base.config, "model_type", None)
    body = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if model_type not in _SMOOTHED_MODEL_TYPES or body is None or head is None or not hasattr(body, "layers"):
        return None
    return body, head


def record_activation_ranges(decoder: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest |activation| each Linear of `decoder` sees while `run()`
    decodes (e.g. `ReportGenerator.generate` over calibration studies); keys are module names
    under the LM body ("layers.3.self_attn.q_proj") and "lm_head"."""
    parts = _decoder_parts(decoder)
    if parts is None:
        raise ValueError("int8 calibration covers Llama-family decoders (llama, mistral, qwen2, qwen3) only")
    body, head = parts
    ranges: dict[str, torch.Tensor] = {}
    # the first Linear after each norm: q/k/v and gate/up share their input, the LM head follows the final norm
    modules = [(name, m) for name, m in body.named_modules() if name.endswith(SMOOTHED_INPUTS)] + [("lm_head", head)]

    def hook(name: str):
        def record(_module, args) -> None:
            x = args[0].detach()
            seen = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
            ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    if not ranges:
        raise ValueError("the calibration run never called the decoder; give it at least one study")
    return ranges


def _scales(activation: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    weight = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0)
    return (activation.clamp(min=1e-5) ** alpha / weight.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smooth_for_int8(decoder: nn.Module, ranges: dict[str, torch.Tensor], alpha: float = SMOOTHING_ALPHA) -> int:
    """Fold per-channel scales between each norm and the Linears it feeds; returns how many
    Linears were smoothed (0 for decoders outside the Llama family). The fp32 function of the
    decoder does not change (up to rounding); only its int8 quantization error does."""
    parts = _decoder_parts(decoder)
    if parts is None:
        return 0
    body, head = parts
    plan = []  # (norm, the Linears it feeds, ranges key): all checked before any weight changes
    for i, layer in enumerate(body.layers):
        attention, mlp = layer.self_attn, layer.mlp
        plan.append((layer.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj], f"layers.{i}.self_attn.q_proj"))
        plan.append((layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], f"layers.{i}.mlp.gate_proj"))
    plan.append((body.norm, [head], "lm_head"))
    for norm, _, key in plan:
        if key not in ranges or ranges[key].shape != norm.weight.shape:
            found = "no entry" if key not in ranges else f"{ranges[key].numel()} channels, the decoder {norm.weight.numel()}"
            raise ValueError(f"the int8 activation ranges do not fit this decoder ({key!r}: {found}); they were recorded "
                             f"on another model: run `radgen model calibrate-int8 MODEL_DIR --data MANIFEST` for this one")
    # the LM head is usually tied to the input embeddings: give it its own copy before scaling it
    head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    for norm, linears, key in plan:
        scale = _scales(ranges[key], [linear.weight for linear in linears], alpha)
        norm.weight.div_(scale.to(norm.weight.dtype))
        for linear in linears:
            linear.weight.mul_(scale.to(linear.weight.dtype))
    return sum(len(linears) for _, linears, _ in plan)


def quantize_decoder(decoder: nn.Module, ranges: dict[str, torch.Tensor] | None) -> nn.Module:
    """The decoder with its Linears (all but KEEP_FLOAT) as torch dynamic int8 Linears, weights
    per output channel, smoothed first where `ranges` are given."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if ranges is not None:
        smooth_for_int8(decoder, ranges)
    names = {name: per_channel_dynamic_qconfig for name, module in decoder.named_modules()
             if isinstance(module, nn.Linear) and not any(name.endswith(keep) for keep in KEEP_FLOAT)}
    with warnings.catch_warnings():
        # torch deprecates its eager quantization API in favour of torchao (not a radgen dependency)
        # and says so at every quantized layer; the API works, and a user's log is no place for it
        warnings.filterwarnings("ignore", message=r"(?s).*(torchao|quantized tensor creation functions)")
        return quantize_dynamic(decoder, names, dtype=torch.qint8)


def save_activation_ranges(ranges: dict[str, torch.Tensor], directory: str | os.PathLike) -> Path:
    """Write ranges to DIRECTORY/ACTIVATION_RANGES_FILE (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(directory) / ACTIVATION_RANGES_FILE
    partial = path.with_name(path.name + ".partial")
    save_file({name: tensor.contiguous() for name, tensor in ranges.items()}, str(partial))
    os.chmod(partial, 0o644)  # a model folder's file, readable like its weights
    os.replace(partial, path)
    return path


def load_activation_ranges(directory: str | os.PathLike | None) -> dict[str, torch.Tensor] | None:
    """The ranges stored in a model folder, or None when it has none; DataError naming the file and
    the fix when it is not a safetensors file of 1-D float tensors."""
    if directory is None:
        return None
    path = Path(directory) / ACTIVATION_RANGES_FILE
    if not path.is_file():
        return None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    fix = f"delete it, or run `radgen model calibrate-int8 {Path(directory)} --data MANIFEST` to write it again"
    try:
        ranges = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{path}: not readable as int8 activation ranges ({str(error).splitlines()[0]}); {fix}") from None
    if not all(t.ndim == 1 and t.is_floating_point() for t in ranges.values()):
        raise DataError(f"{path}: int8 activation ranges must be 1-D float tensors; {fix}")
    return ranges
