"""Fast paths for training and inference that keep the numerics of the plain paths.

- `label_position_loss`: the causal-LM loss computed from logits at label positions only. HF's
  `ForCausalLM.forward(labels=...)` projects EVERY position onto the vocabulary (SmolLM2: 49,152
  columns) and then ignores the visual prefix, the prompt and the padding. radgen's sequences are
  16+ visual tokens + prompt + ≤ 60 report tokens, so about a third of those projections are
  thrown away, and the (B, L, V) fp32 logits tensor (plus its gradient) is the largest activation
  of a radgen-small step. Here the decoder body runs once, the hidden states at positions whose
  next token is a label are gathered, and the LM head + cross-entropy run over those rows in chunks
  (`chunk` rows at a time), so no full-vocabulary tensor for masked positions is ever built. The
  loss is the same mean over label tokens HF computes (tests check equality to 1e-5, and grads).
- `prepare_for_inference`: merge LoRA, fold a CNN image encoder's batch norms into its convolutions
  (`fold_batch_norms`) and put it in channels-last layout, on CPU pre-pack the decoder's Linear
  weights for oneDNN (`PackedLinear`) where a timing on this CPU says it pays (`packing_pays`: the
  block Linears and the LM head each on its own timing) and run grouped-query attention without
  key/value copies (`radgen.models.attention`) with the MLPs and attention projections skipping
  padded positions (`radgen.models.padding_free`), then (dtype "auto") cast the decoder to bfloat16
  on a CUDA GPU that supports it and on a CPU that computes bf16 natively (`native_bf16_cpu`:
  AVX512-BF16 or AMX), give the decoder body fp16 weights with fp32 arithmetic on other x86-64 CPUs
  where fbgemm runs (`radgen.models.half_weights`; AVX2), and keep fp32 elsewhere; "int8" (torch dynamic quantization of the
  Linear layers after channel smoothing, CPU, `radgen.models.int8`) is opt-in — measured speed and
  greedy-text deltas are in docs/benchmarks.md, "Performance" and "Grounding".
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import platform
from collections.abc import Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from radgen.allocator import NO_FAST_PATHS_ENV, fast_paths_disabled, keep_large_blocks_in_heap, release_free_heap
from radgen.config import INFERENCE_DTYPES
from radgen.models import packed_linear
from radgen.models.attention import use_grouped_attention
from radgen.models.half_weights import fp16_kernels_available, use_half_weights
from radgen.models.packed_linear import PackedLinear
from radgen.models.padding_free import use_padding_free_layers
from radgen.models.peft import base_model
from radgen.models.same_padding import fold_same_padding

# Causal LMs whose logits are exactly `lm_head(last_hidden_state)` (no logit scaling / soft-capping /
# extra projection after the body), so the loss may skip masked rows. Others take the plain path.
_PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "opt", "gpt2", "phi3"}
# NO_FAST_PATHS_ENV (radgen.allocator), set to 1, turns off every CPU-specific fast path (weight
# packing, int8 kernels); also what tests use to run the fallback branch on a CPU that has the fast one.
# 1: always pack the decoder's Linear weights for oneDNN at inference, 0: never; unset: time both on
# one of the model's own layers and keep the faster (`packing_pays`)
PACK_ENV = "RADGEN_PACK_LINEARS"
# 0: Llama decoder bodies keep transformers' forward at inference; "unfused": the lean forward
# without fused projections; unset: the lean forward with them (radgen.models.lean_forward)
LEAN_ENV = "RADGEN_LEAN_FORWARD"
# how `packing_pays` times the LM head: a big layer (SmolLM2: 113 MB in fp32), so fewer, smaller calls
# than a block's timing (batch-1 steps and drafted passes; about 0.3 s on 2 cores)
HEAD_TIMING = {"rows": (1, 17), "calls": 2, "repeats": 3}
# how many bytes of distinct layers `packing_pays` streams through per timed call: more than a
# CPU's last-level cache holds (Zen 3: 32 MB a CCX), as the decoder's 30 layers are
STREAM_BYTES = 48 * 2**20

log = logging.getLogger(__name__)


def lm_body_and_head(decoder: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(body, LM head) of a causal LM whose logits are exactly head(body's last hidden state), so a
    caller may run the head on the positions it needs only; None for other decoders."""
    base = base_model(decoder)
    if getattr(base.config, "model_type", None) not in _PLAIN_HEAD_MODEL_TYPES:
        return None
    body = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    return (body, head) if body is not None and body is not base and head is not None else None


def supports_label_position_loss(decoder: nn.Module) -> bool:
    return lm_body_and_head(decoder) is not None


# rows of logits per fp32 log-softmax on CPU: 32 x 49,152 fp32 is 6 MiB, which stays in a server's
# last-level cache between the upcast, the log-softmax and the gather; one pass over a re-scored
# batch's 1,060 x 49,152 logits (200 MiB) streams memory three times and took 4x longer
# (benchmarks/cpu_kernels.py, "token log-probs"). Row-wise ops: chunking changes no value.
LOGPROB_ROWS_CPU = 32


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p of `tokens` (N,) under the rows of `logits` (N, vocabulary): an fp32 log-softmax of the raw logits."""
    # log_softmax then gather, not gather - logsumexp: torch's logsumexp is unfused (max, sub, exp,
    # sum, log as separate passes), 1.5-2x slower over a 49k vocabulary (benchmarks/cpu_kernels.py)
    rows = LOGPROB_ROWS_CPU if logits.device.type == "cpu" else logits.shape[0]
    if logits.shape[0] <= rows:
        return logits.float().log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)
    return torch.cat([logits[start:start + rows].float().log_softmax(-1).gather(1, tokens[start:start + rows, None]).squeeze(1)
                      for start in range(0, logits.shape[0], rows)])


def _label_rows(decoder: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden states whose next token is a label, those labels, the (B, L-1) mask of them): the
    decoder body runs once, no position reaches the vocabulary yet."""
    body, _ = lm_body_and_head(decoder)
    hidden = body(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, return_dict=True).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    return hidden[:, :-1][keep], targets[keep], keep


def label_position_loss(decoder: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Mean next-token cross-entropy over label positions (labels -100 elsewhere), as HF computes it.

    `labels` are aligned with `inputs_embeds` (position t's label is the token at t; the loss at t
    uses the hidden state at t-1), exactly the convention of HF `labels=`.
    """
    rows, wanted, keep = _label_rows(decoder, inputs_embeds, attention_mask, labels)
    head = base_model(decoder).get_output_embeddings()
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk):
        # fp32 logits like HF's loss (ForCausalLMLoss upcasts), one chunk at a time
        logits = head(rows[start:start + chunk]).float()
        total = total + F.cross_entropy(logits, wanted[start:start + chunk], reduction="sum")
    return total / keep.sum().clamp(min=1)


@torch.no_grad()
def label_position_logprobs(decoder: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                            labels: torch.Tensor, chunk: int = 1024) -> list[list[float]]:
    """Per row, log p (fp32 log-softmax of the raw logits) of each label token given the tokens
    before it, in order: what scoring a finished text needs (a grounded report after its
    findings-consistency edits), without the (B, L, vocabulary) logits of every visual, prompt and
    padding position, the bulk of that pass's time and memory. Same labels convention as
    `label_position_loss`."""
    rows, wanted, keep = _label_rows(decoder, inputs_embeds, attention_mask, labels)
    head = base_model(decoder).get_output_embeddings()
    values = [token_logprobs(head(rows[start:start + chunk]), wanted[start:start + chunk]) for start in range(0, rows.shape[0], chunk)]
    return split_by_counts(torch.cat(values).tolist() if values else [], keep.sum(1).tolist())


def split_by_counts(flat: list[float], counts: list[int]) -> list[list[float]]:
    """Cut `flat` into consecutive pieces of `counts[i]` values: per-row lists from row-major picks."""
    out, at = [], 0
    for count in counts:
        out.append(flat[at:at + count])
        at += count
    return out


def packing_available() -> bool:
    """This torch build has oneDNN's packed-linear ops (says nothing about the CPU; see packing_supported)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


@functools.cache
def _packing_probe(dtype: torch.dtype) -> bool:
    """Pack a small weight and multiply with it: the only check that covers every CPU and oneDNN version.

    Why a probe and not CPU flags: oneDNN's bf16 reorder needs AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT
    and raises on an AVX2-only CPU, fp32 packing works on any x86-64, and aarch64 builds differ again;
    the rules live inside oneDNN and change between versions."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686", "aarch64", "arm64"):
        return False
    try:
        weight = torch.linspace(-1, 1, 48, dtype=torch.float32).reshape(6, 8).to(dtype)
        x = torch.linspace(-1, 1, 16, dtype=torch.float32).reshape(2, 8).to(dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, packed_linear.PACK_ROWS_HINT)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        return bool(torch.allclose(out.float(), (x.float() @ weight.float().T), atol=0.05, rtol=0.05))
    except (RuntimeError, NotImplementedError):
        return False


def packing_supported(dtype: torch.dtype) -> bool:
    """Whether Linear weights of `dtype` can be pre-packed for oneDNN on this CPU (probed once per dtype)."""
    return packing_available() and not fast_paths_disabled() and _packing_probe(dtype)


@functools.cache
def _packing_timing(out_features: int, in_features: int, dtype: torch.dtype, threads: int, rows: tuple[int, ...] = (1, 9, 64),
                    calls: int = 1, repeats: int = 6, rows_hint: int = 1) -> tuple[float, float]:
    """(packed, plain) seconds for Linears of this shape over decoding-like row counts (default:
    batch-1 steps, drafted passes, batches), best of `repeats` per row count; packed's is plain's
    total scaled by the mean packed/plain ratio, so each row count weighs alike. `rows_hint`: the
    packed layout's row count (`PackedLinear`).

    Why several layers: a decoder pass streams every layer's weights from memory, and one layer
    timed again and again sits in the CPU's cache, where plain and packed kernels run alike. On an
    AVX2 Zen 3 one 576x1536 layer timed within a few percent either way, so the choice flipped from
    load to load (docs/benchmarks.md, "Packing the LM head on its own timing"), while whole decoder
    passes ran up to 1.4x faster packed (benchmarks/decoder_pass_cost.py; docs/benchmarks.md, "A
    lean forward for the decoder body"). So the timing runs through enough distinct layers of the
    shape to fill `STREAM_BYTES`, as a pass does."""
    import math
    import time

    torch.manual_seed(0)
    size = out_features * in_features * torch.empty(0, dtype=dtype).element_size()
    copies = max(1, min(64, math.ceil(STREAM_BYTES / size)))
    plain = [nn.Linear(in_features, out_features).to(dtype).eval() for _ in range(copies)]
    packed = [PackedLinear(layer, rows_hint) for layer in plain]
    inputs = [torch.randn(n, in_features).to(dtype) for n in rows]
    best = {(name, n): float("inf") for name in ("packed", "plain") for n in rows}
    with torch.no_grad():
        for _ in range(repeats):  # interleaved, so a busy moment costs both alike
            for x in inputs:
                for name, layers in (("packed", packed), ("plain", plain)):
                    start = time.perf_counter()
                    for _ in range(calls):
                        for layer in layers:
                            layer(x)
                    best[name, x.shape[0]] = min(best[name, x.shape[0]], time.perf_counter() - start)
    # every row count weighs alike (the largest would otherwise decide alone): plain's total time,
    # and packed's as that total times the mean packed/plain ratio over the row counts
    plain_total = sum(best["plain", n] for n in rows)
    ratio = sum(best["packed", n] / best["plain", n] for n in rows) / len(rows)
    return ratio * plain_total, plain_total


def packing_probe_layer(decoder: nn.Module, head: bool = False) -> nn.Linear | None:
    """The Linear whose shape `packing_pays` times: the LM head (head=True) or the largest block Linear."""
    output = _output_layer(decoder)
    if head:
        return output if type(output) is nn.Linear and output.weight.device.type == "cpu" else None
    layers = [m for m in decoder.modules() if type(m) is nn.Linear and m is not output and m.weight.device.type == "cpu"]
    return max(layers, key=lambda m: m.weight.numel()) if layers else None


def time_packing(layer: nn.Linear, head: bool = False, cached: bool = True) -> tuple[float, float]:
    """(packed, plain) seconds for `layer`'s shape, timed as `packing_pays` times it (cached=False: a fresh timing)."""
    timing = _packing_timing if cached else _packing_timing.__wrapped__
    return timing(layer.out_features, layer.in_features, layer.weight.dtype, torch.get_num_threads(), **(HEAD_TIMING if head else {}),
                  rows_hint=packed_linear.PACK_ROWS_HINT)


def packing_pays(decoder: nn.Module, head: bool = False) -> bool:
    """Whether oneDNN-packed weights run faster than plain `F.linear` on this CPU, for this
    decoder's block Linears (head=False) or its LM head (head=True).

    Why measured: packing gave 1.29x at batch 1 on an AMD EPYC (MKL's sgemv ran single-threaded
    there) but was 0.64x on an Intel Sapphire Rapids, where MKL's own kernels are faster
    (docs/benchmarks.md, Performance). No CPU flag predicts it, so one of the decoder's largest
    block Linear shapes is timed both ways (through 48 MB of such layers, once per process and
    shape, `_packing_timing`) and packing is kept only if it saves at least 5%. The LM head is timed on its own: on an AVX2-only
    Zen 3 the block shapes came out within a few percent either way, so the choice flipped from load
    to load, while the 49,152-row head ran 1.5-1.75x faster packed; one decision for both left it
    unpacked whenever the blocks' timing said no (docs/benchmarks.md, "Packing the LM head on its
    own timing"). `RADGEN_PACK_LINEARS=1` / `0` skips the timing."""
    layer = packing_probe_layer(decoder, head)
    return layer is not None and layer_packing_pays(layer, "LM head" if head else "decoder blocks", head)


def layer_packing_pays(layer: nn.Linear, what: str, head: bool = False) -> bool:
    """`packing_pays` for one Linear's shape (`what` names it in the debug line): the env override,
    then this CPU's support for its dtype, then the timing."""
    forced = os.environ.get(PACK_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    dtype = layer.weight.dtype
    if not packing_supported(dtype):
        _note_once(f"this CPU (or {NO_FAST_PATHS_ENV}) does not allow oneDNN weight packing in {str(dtype).replace('torch.', '')}; "
                   "the decoder's Linear layers run unpacked (same results)")
        return False
    packed, plain = time_packing(layer, head)
    pays = packed < 0.95 * plain
    # debug, not info: this is the normal path on every CPU, and default runs keep stderr clean
    log.debug(f"oneDNN weight packing {'on' if pays else 'off'} for this CPU's {what}: "
              f"{packed * 1e3:.1f} ms packed vs {plain * 1e3:.1f} ms plain on a {layer.in_features}x{layer.out_features} layer "
              f"(set {PACK_ENV}=0/1 to skip the timing)")
    return pays


def half_weights_supported() -> bool:
    """fp16 decoder weights with fp32 arithmetic (`radgen.models.half_weights`) run here: fbgemm's
    kernels on this CPU and build (x86-64 with AVX2), and the CPU fast paths not turned off."""
    return not fast_paths_disabled() and fp16_kernels_available()


def int8_supported() -> bool:
    """torch dynamic int8 quantization needs a quantized engine (fbgemm/x86 on x86-64, qnnpack on ARM)."""
    if fast_paths_disabled():
        return False
    return any(engine != "none" for engine in torch.backends.quantized.supported_engines)


@functools.cache
def _note_once(message: str) -> None:
    log.info("radgen: %s", message)  # radgen's own voice, like its other notes (tests/test_quiet.py allows those)


def pack_linears(module: nn.Module, skip: Collection[nn.Module] = ()) -> int:
    """Replace every CPU fp32/bf16 nn.Linear under `module` (but those in `skip`) with a PackedLinear; returns how many.

    Layers whose dtype this CPU cannot pack (bf16 without AVX-512/AVX-NE-CONVERT) stay plain nn.Linear
    (same results, slower), with a one-line note."""
    if not packing_available():
        return 0
    skipped = {id(layer) for layer in skip}
    candidates = [(name, child.weight.dtype) for name, child in module.named_modules()
                  if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype in (torch.float32, torch.bfloat16)
                  and id(child) not in skipped]
    unsupported = sorted({str(dtype).replace("torch.", "") for _, dtype in candidates if not packing_supported(dtype)})
    if unsupported:
        _note_once(f"this CPU (or {NO_FAST_PATHS_ENV}) does not allow oneDNN weight packing in {', '.join(unsupported)}; "
                   "those Linear layers run unpacked (same results, slower)")
    names = [name for name, dtype in candidates if packing_supported(dtype)]
    for name in names:  # one at a time, holding no reference to the old layer: peak memory grows by one layer, not a model
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, PackedLinear(getattr(parent, attr)))
    if names:
        own_weights(module)
    return len(names)


def _output_layer(decoder: nn.Module) -> nn.Module | None:
    base = base_model(decoder)
    return base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None


def pack_where_it_pays(decoder: nn.Module, blocks: bool = True) -> int:
    """Pack the decoder's block Linears (unless blocks=False) and its LM head, each where this CPU's
    timing says it pays (`packing_pays`); returns how many Linears were packed."""
    output = _output_layer(decoder)
    blocks, head = blocks and packing_pays(decoder), output is not None and packing_pays(decoder, head=True)
    linears = [m for m in decoder.modules() if type(m) is nn.Linear]
    skip = [m for m in linears if not (head if m is output else blocks)]
    return pack_linears(decoder, skip=skip) if len(skip) < len(linears) else 0


def own_weights(module: nn.Module) -> int:
    """Copy every parameter and buffer of `module` into memory of its own; returns the bytes copied.

    Why: transformers loads a safetensors checkpoint memory-mapped, and each tensor is a view of that
    one mapping. Once pack_linears has replaced the Linear layers, the tensors left (embeddings,
    norms) still hold the mapping open, and with it every page the packing read: the whole fp32
    checkpoint stays resident next to its packed copy (SmolLM2-135M: 513 MB, 101 MB of it the
    copy-on-write pages LoRA merging wrote). Copying what is left (the 113 MB embedding table, the
    norms) lets the mapping close (docs/benchmarks.md, "Serving under adversarial uploads").
    Parameters shared by several modules (tied embeddings) are one Parameter object, so they stay
    shared; `clone` keeps the memory format (a channels-last weight stays channels-last).
    """
    copied = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:  # both deduplicate shared tensors
            tensor.data = tensor.data.clone()
            copied += tensor.numel() * tensor.element_size()
    return copied


def resolve_inference_dtype(dtype: str, device: torch.device) -> str:
    if dtype not in INFERENCE_DTYPES:
        from radgen.errors import ConfigError

        raise ConfigError(f"inference dtype '{dtype}' is not one of {', '.join(INFERENCE_DTYPES)}")
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and native_bf16_cpu():
        # measured on the grounded radgen-small (docs/benchmarks.md, "Grounding" and "AVX-512 again, on a
        # Zen 5 EPYC"): the same findings, language within noise of fp32, 1.14-1.28x its speed; it
        # rewords some reports with their batch, fp32 does not (--dtype float32 for that)
        log.debug("decoder in bfloat16: this CPU computes bf16 natively (pass dtype float32 / --dtype float32 for fp32)")
        return "bfloat16"
    if device.type == "cpu" and half_weights_supported():
        # elsewhere bf16 is emulated (slower than fp32); fp16 weights with fp32 arithmetic (fbgemm) measured
        # on an AVX2 Zen 3 (docs/benchmarks.md, "fp16 weights, fp32 arithmetic"): faster than fp32, the same
        # findings, and a report's words do not depend on its batch (radgen.models.half_weights)
        log.debug("decoder weights in float16, arithmetic in fp32 (pass dtype float32 / --dtype float32 for fp32)")
        return "float16"
    return "float32"


# ONEDNN_MAX_CPU_ISA values that stop oneDNN short of AVX512-BF16 / AMX dot products
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bf16_cpu() -> bool:
    """The CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16 on x86-64) and torch and oneDNN
    may use it, so a bf16 decoder is faster than fp32 here. False with the CPU fast paths turned off
    (RADGEN_NO_CPU_FAST_PATHS=1), with torch's or oneDNN's kernels capped below AVX-512
    (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), on other architectures, and where torch cannot tell."""
    if fast_paths_disabled():
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        found = capabilities() if capabilities is not None else {}
    except (RuntimeError, AttributeError):
        return False
    # only the x86 flags were measured; ARM's bf16 extensions keep fp32 until someone measures them
    if not (found.get("avx512_bf16") or found.get("amx_bf16")):
        return False
    # the CPU has the instructions, but torch's kernels (ATEN_CPU_CAPABILITY) or oneDNN's
    # (ONEDNN_MAX_CPU_ISA) may be capped below them: bf16 would then be emulated, slower than fp32
    kernels = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")()
    return "AVX512" in str(kernels).upper() and os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() not in _ONEDNN_ISAS_WITHOUT_BF16


def fold_batch_norms(module: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d into the Conv2d registered just before it (torch's
    `fuse_conv_bn_eval`), leaving only the norm's activation (timm's BatchNormAct2d); returns how many.

    Why: a frozen CNN's batch norms are a fixed per-channel affine map, yet each is a separate pass
    over the feature map; in radgen-small's EfficientNet-Lite0 (both views, plus the finding head's
    copy of the last blocks) they took ~6% of a batch-32 report on CPU. Registration order stands in
    for execution order here (true of timm's conv/bn pairs), so callers check the outputs
    (`_fold_encoder_batch_norms`). Inference only: the folded module has no batch-norm state left.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats
                    and norm.num_features == conv.out_channels and not conv.training and not norm.training):
                parent._modules[first] = fuse_conv_bn_eval(conv, norm)
                after = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if isinstance(m, nn.Module)]
                # eval mode, as the norm was: a module in training mode makes every generate call switch the whole model
                parent._modules[second] = (nn.Sequential(*after) if after else nn.Identity()).eval()
                folded += 1
    return folded


@torch.no_grad()
def _fold_encoder_batch_norms(model: Any) -> int:
    """Fold the image encoder's (and a finding head's own encoder blocks') batch norms where that
    keeps their outputs (checked on one random image, else left as they were, with a note)."""
    encoder, head = model.encoder, getattr(model, "findings", None)
    tails = head.tails() if head is not None else []
    size = getattr(encoder, "image_size", None)
    if encoder.training or not isinstance(size, int) or not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()):
        return 0
    probe = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(next(encoder.parameters()).device)
    blocks = model._head_blocks() if tails else 0

    def outputs() -> list[torch.Tensor]:
        if not blocks:
            return [encoder(probe)]
        tokens, trunk = encoder.split_forward(probe, blocks)
        return [tokens, trunk] + [tail(trunk) for tail in tails]

    before, saved = outputs(), (copy.deepcopy(encoder), copy.deepcopy(head) if blocks else None)
    folded = fold_batch_norms(encoder) + (sum(fold_batch_norms(tail) for tail in tails) if blocks else 0)
    if folded and not all(torch.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(before, outputs())):
        model.encoder = saved[0]
        if blocks:
            model.findings = saved[1]
        _note_once(f"folding the image encoder's batch norms changed its outputs ({type(encoder).__name__}); kept them unfolded")
        return 0
    return folded


def decoder_precision(decoder: nn.Module) -> str:
    """The precision a prepared decoder runs in, as `--dtype` names it: "int8" (dynamically quantized
    Linears), "float16" (fp16-weight Linears on CPU), else its parameters' dtype."""
    from radgen.models.half_weights import HalfWeightLinear

    kinds = {type(m) for m in decoder.modules()}
    if any(kind.__module__.startswith("torch.ao.nn.quantized") for kind in kinds):
        return "int8"
    if HalfWeightLinear in kinds:
        return "float16"
    return str(next(decoder.parameters()).dtype).replace("torch.", "")


def _has_layer_body(decoder: nn.Module) -> bool:
    """The decoder's blocks are its body's `layers` (Llama-family), where `use_half_weights` looks for them."""
    split = lm_body_and_head(decoder)
    return split is not None and isinstance(getattr(split[0], "layers", None), nn.ModuleList)


def _lean_forward_available() -> bool:
    """radgen.models.lean_forward imports (it builds on transformers 5's Llama module and masks)."""
    try:
        import radgen.models.lean_forward  # noqa: F401
    except ImportError as err:
        _note_once(f"the lean decoder forward needs a newer transformers ({err}); decoding with transformers' own forward")
        return False
    return True


def prepare_for_inference(model: Any, dtype: str = "auto", merge: bool = True, pack: bool = True,
                          int8_ranges: dict[str, torch.Tensor] | None = None) -> str:
    """Merge LoRA (unless merge=False) and put the decoder in the fastest inference form; returns the dtype chosen.

    Only the decoder changes dtype: the image encoder and connector stay fp32 (they are a small share
    of decoding time; the encoder's batch norms are folded, `fold_batch_norms`), and `ReportGenerator` casts the visual tokens to the decoder's dtype. Token
    log-probabilities are computed in fp32 from the (bf16) logits either way. int8_ranges: the
    model's calibrated activation ranges (`radgen.models.int8`), which int8 smooths with.
    """
    if merge:
        model.merge_adapters()
    if model.encoder is not None:
        if _fold_encoder_batch_norms(model):
            model.batch_norms_folded = True  # save_pretrained refuses such a model: its norms are gone
        model.encoder.prepare_for_inference()
        if getattr(getattr(model, "findings", None), "tail_blocks", 0) and getattr(model.encoder, "channels_last", False):
            # the head's copy of the last blocks reads the encoder's (now channels-last) trunk map
            for tail in model.findings.tails():
                tail.to(memory_format=torch.channels_last)
                fold_same_padding(tail)
    decoder = model.decoder
    current = next(decoder.parameters()).dtype
    chosen = resolve_inference_dtype(dtype, next(decoder.parameters()).device)
    if current != torch.float32 and chosen in ("float32", "bfloat16", "float16"):
        return str(current).replace("torch.", "")  # loaded in fp16/bf16/8-bit on purpose: keep it
    if chosen == "bfloat16":
        model.decoder = decoder.to(torch.bfloat16)
    on_cpu = next(model.decoder.parameters()).device.type == "cpu"
    if chosen == "float16" and not on_cpu:
        model.decoder = decoder.to(torch.float16)  # a GPU multiplies fp16 itself
    elif chosen == "float16" and not (merge and half_weights_supported() and _has_layer_body(model.decoder)):
        _note_once("fp16 decoder weights need fbgemm (x86-64 with AVX2; not on this CPU/build, or "
                   f"{NO_FAST_PATHS_ENV} is set), merged LoRA and a decoder whose blocks are its body's `layers` "
                   "(Llama, Qwen, Mistral); decoding in float32 instead")
        chosen = "float32"
    half = chosen == "float16" and on_cpu
    if on_cpu:
        if not fast_paths_disabled():
            keep_large_blocks_in_heap()  # decoder activations reused, not page-faulted in again (radgen.allocator)
        use_grouped_attention(base_model(model.decoder))  # grouped key/value heads without copies (radgen.models.attention)
    if pack and chosen in ("float32", "bfloat16") and merge and on_cpu:
        pack_where_it_pays(model.decoder)
    elif pack and half:
        pack_where_it_pays(model.decoder, blocks=False)  # the LM head stays fp32 (radgen.models.half_weights)
    if chosen == "int8":
        if next(decoder.parameters()).device.type != "cpu":
            from radgen.errors import ConfigError

            raise ConfigError("inference dtype int8 (torch dynamic quantization) runs on CPU only; use bfloat16 on GPU")
        if not int8_supported():
            _note_once(f"int8 inference needs a torch quantized engine (none on this CPU/build, or {NO_FAST_PATHS_ENV} is set); "
                       "decoding in float32 instead")
            if pack and merge:
                pack_where_it_pays(model.decoder)
            chosen = "float32"
        else:
            from radgen.models.int8 import ACTIVATION_RANGES_FILE, quantize_decoder

            if int8_ranges is None:
                _note_once(f"int8 without the model's activation ranges ({ACTIVATION_RANGES_FILE}): its reports differ from "
                           "fp32 far more than calibrated int8's; run `radgen model calibrate-int8 MODEL_DIR --data MANIFEST`")
            model.decoder = quantize_decoder(decoder, int8_ranges)
            own_weights(model.decoder)  # as after packing: the embeddings left must not keep the checkpoint's mapping open
    if on_cpu:
        # after packing / quantization, which replace the Linear layers the hooks sit on
        split = lm_body_and_head(model.decoder)
        if split is not None:
            lean = os.environ.get(LEAN_ENV, "").strip().lower()
            if not fast_paths_disabled() and lean not in ("0", "false", "no", "off") and _lean_forward_available():
                from radgen.models.lean_forward import use_lean_forward

                # the body's passes without transformers' per-layer Python, projections fused (radgen.models.lean_forward)
                may_pack = pack and merge and chosen in ("float32", "bfloat16")
                use_lean_forward(split[0], fuse=lean != "unfused",
                                 pack=(lambda layer: layer_packing_pays(layer, "fused projections")) if may_pack else None, half=half)
            if half:  # the body's Linears the fusing left (o_proj, down_proj; all with the lean forward off)
                use_half_weights(split[0])
                own_weights(model.decoder)  # the fp32 weights' checkpoint mapping may close (as after packing)
            # padded positions skip the MLPs and projections in the calls the lean forward leaves to
            # transformers, and in other decoders (radgen.models.padding_free); after the fusing, which
            # replaces the projections these hooks sit on
            use_padding_free_layers(split[0])
        # the fp32 weights that packing, fp16 weights or int8 replaced went back to the heap, which
        # keep_large_blocks_in_heap's threshold keeps resident: an idle model would hold them
        # (radgen-small: 130-240 MB; docs/benchmarks.md, Performance)
        release_free_heap()
    return chosen
