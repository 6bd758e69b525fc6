"""`HalfWeightLinear`: an inference-only Linear that keeps its weight in fp16 and multiplies in fp32 (CPU).

Why: on a CPU without bf16 arithmetic (AVX2-only x86-64, AVX-512 without BF16), radgen-small's
drafted decoding feeds the decoder 1-160 rows a call, and there a Linear is bound by reading its
weight and by the kernel's efficiency on few rows, not by multiply-adds. fbgemm's fp16 GEMM (the
kernel behind torch's dynamic fp16 quantization, `torch.ops.quantized.linear_dynamic_fp16`) reads
half the bytes, widens them to fp32 in registers (F16C) and accumulates in fp32: on an AVX2 Zen 3,
1.5-2.6x faster than oneDNN's packed fp32 Linear at 1-12 rows, 1.0-1.7x at 52-160 and about as
fast at 640-1280 (`benchmarks/cpu_kernels.py --kernels half-weights`; docs/benchmarks.md, "fp16
weights, fp32 arithmetic"). Unlike dynamic int8 (`radgen.models.int8`), nothing depends on the
other rows of a call: the activations are not quantized, so a row's result differs between call
shapes only in fp32's last bits, as oneDNN's fp32 kernels do, and a report's words do not change
with its batch. What changes is the weights: each is rounded to fp16 once (relative error <= 2^-11,
8x finer than bf16), so a few near-tie greedy choices fall otherwise than fp32's.

Used by `radgen.models.fast.prepare_for_inference` for dtype "float16" on CPU (and for "auto" on CPUs
without native bf16 where fbgemm runs, `radgen.models.fast.half_weights_supported`): the decoder body's Linears only;
the LM head stays fp32 (its shortlist rows must give the whole head's logits, to the bit where it is packed,
`radgen.models.shortlist`), as do the image encoder and connector.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F
from torch import nn

from radgen.models.packed_linear import save_dense_state


@functools.cache
def _ops() -> tuple | None:
    """(prepack, linear, unpack) of torch's fbgemm fp16 ops, or None where this build lacks them
    (looked up once: every product of a pass asks for them)."""
    quantized = getattr(torch.ops, "quantized", None)
    try:
        return quantized.linear_prepack_fp16, quantized.linear_dynamic_fp16, quantized.linear_unpack_fp16
    except (AttributeError, RuntimeError):
        return None


@functools.cache
def _probe() -> bool:
    """Pack a small fp16 weight and multiply with it: fbgemm needs x86-64 with AVX2 and F16C (it
    raises elsewhere), and some builds (aarch64, no fbgemm) lack the ops; only a call covers every case."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if not any(engine in ("fbgemm", "x86") for engine in torch.backends.quantized.supported_engines):
        return False
    ops = _ops()
    if ops is None:
        return False
    prepack, linear, _ = ops
    try:
        weight = torch.linspace(-1, 1, 48).reshape(6, 8)
        x = torch.linspace(-1, 1, 16).reshape(2, 8)
        out = linear(x, prepack(weight, None))
        return bool(torch.allclose(out, x @ weight.half().float().T, atol=1e-4, rtol=1e-4))
    except (RuntimeError, NotImplementedError):
        return False


def fp16_kernels_available() -> bool:
    """Whether this CPU and torch build run fbgemm's fp16-weight Linear (probed once a process;
    `radgen.models.fast.half_weights_supported` adds the switch that turns CPU fast paths off)."""
    return _probe()


class HalfWeightLinear(nn.Module):
    """An inference-only nn.Linear whose weight is stored in fp16 (packed for fbgemm) and whose
    products accumulate in fp32; inputs and outputs are fp32. `weight` gives the fp16-rounded
    weight as fp32, the values every product here uses."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        prepack = _ops()[0]
        self.out_features, self.in_features = weight.shape
        weight = weight.detach().to(torch.float32).contiguous()
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(torch.float32).clone(), requires_grad=False)
        # the bias is added here, in fp32, rather than by fbgemm, so it is kept exactly as given
        self.packed = prepack(weight, None)
        self.training = False  # inference-only (PackedLinear's note on modes)

    @classmethod
    def from_linear(cls, linear: nn.Module) -> "HalfWeightLinear":
        half = cls(linear.weight, linear.bias)
        half.training = linear.training
        return half

    @property
    def weight(self) -> torch.Tensor:
        """The fp16-rounded weight, as fp32 (for code that inspects it; every product here uses these values)."""
        return _ops()[2](self.packed)[0].to(torch.float32)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The product of a (N, in_features) input, no autograd (what `forward` runs at inference)."""
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        out = _ops()[1](x, self.packed)
        return out if self.bias is None else out.add_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            # fbgemm's op has no autograd formula; gradient x input explanations need one (same weights)
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        out = self.rows(x.reshape(-1, self.in_features))
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        # .to()/.cuda() would leave the opaque packed weight behind on the CPU
        probe = fn(torch.empty(0))
        if probe.device.type != "cpu" or probe.dtype != torch.float32:
            raise RuntimeError(f"this model's decoder keeps fp16 weights for CPU inference; it cannot move to {probe.device} / "
                               f"{probe.dtype}. Load it again (radgen.generate.load_model(..., device=..., dtype=...)) instead")
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict) -> "HalfWeightLinear":
        twin = HalfWeightLinear(self.weight.clone(), None if self.bias is None else self.bias.detach().clone())
        twin.training = self.training
        return twin

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        save_dense_state(self, destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp16 weights, fp32 arithmetic"


def use_half_weights(body: nn.Module) -> int:
    """Replace every CPU fp32 nn.Linear in a decoder body's layers (not its embeddings or the LM
    head, which are not under `body.layers`) by a HalfWeightLinear; returns how many."""
    layers = getattr(body, "layers", None)
    if layers is None or not fp16_kernels_available():
        return 0
    names = [name for name, child in layers.named_modules()
             if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype == torch.float32]
    for name in names:  # one at a time: peak memory grows by one layer, not a model
        parent_name, _, attr = name.rpartition(".")
        parent = layers.get_submodule(parent_name) if parent_name else layers
        setattr(parent, attr, HalfWeightLinear.from_linear(getattr(parent, attr)))
    return len(names)
