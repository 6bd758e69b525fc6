"""`PackedLinear`: an inference-only Linear whose weight is pre-packed for oneDNN (CPU).

Its own module so that `radgen.models.fast` (which decides where packing pays and packs) and
`radgen.models.lean_forward` (which runs packed layers without their module call) both import it
without importing each other. `radgen.models.fast.PackedLinear` is the same class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN lays a packed weight out for a given number of input rows. radgen's CPU decoding feeds
# 5-160 rows a call (drafted passes ~12 at batch 1, prefills ~50, batch-32 passes up to 160), and
# there a layout for 16 rows ran 1.2-1.8x faster a layer than the one for a single row, with the
# weights streaming from memory as in a pass (AVX2 Zen 3; benchmarks/cpu_kernels.py --kernels
# pack-hints), and whole reports 15% (batch 1) and 7% (batch 32) faster with the same text
# (benchmarks/drafted_decoding.py --also-pack-hint 1; docs/benchmarks.md, "Packed weights laid out for
# 16 rows"). Read when a layer is packed; before 2026-12-02 it was 1.
PACK_ROWS_HINT = 16


class PackedLinear(nn.Module):
    """An inference-only nn.Linear whose weight is pre-packed for oneDNN (CPU).

    Why: at batch 1 every decode step is a matrix-vector product per layer, and on the project's
    2-core CPU the default path (MKL sgemv) ran single-threaded, far below the memory bandwidth;
    through oneDNN with the weight packed once, radgen-small decodes a report 1.29x faster at batch 1
    with the same greedy reports (benchmarks/perf_compare.py; docs/benchmarks.md, Performance).
    Inductor's CPU "freezing" does the same packing; doing it here needs no compile step. Same
    dtype, same math: outputs differ from F.linear only by summation order (~1e-6 relative).
    """

    def __init__(self, linear: nn.Linear, rows_hint: int | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        # the layout only: any number of rows multiplies correctly
        self.rows_hint = PACK_ROWS_HINT if rows_hint is None else int(rows_hint)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, self.rows_hint)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        # the mode of the layer it replaces: a module left in training mode inside an eval model made
        # every `ReportGenerator.generate` call walk and switch all ~850 modules (15 ms a batch-1 report)
        self.training = linear.training

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, rows_hint: int | None = None) -> "PackedLinear":
        """A PackedLinear over `weight` (out_features, in_features) and `bias`, without an nn.Linear to copy from."""
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta").eval()  # inference-only
        linear.weight = nn.Parameter(weight, requires_grad=False)
        if bias is not None:
            linear.bias = nn.Parameter(bias, requires_grad=False)
        return cls(linear, rows_hint)

    @property
    def weight(self) -> torch.Tensor:
        """The plain weight (unpacked on demand, for code that inspects it)."""
        return self.packed.to_dense()

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The packed product of a (N, in_features) input, no autograd (what `forward` runs at inference)."""
        if x.dtype != self.packed.dtype:
            x = x.to(self.packed.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            # the oneDNN op has no autograd formula; gradient x input explanations need one
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        out = self.rows(x.reshape(-1, self.in_features))
        return out.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        # .to()/.cuda()/.half() would leave the opaque packed weight behind on the CPU in its dtype
        probe = fn(torch.empty(0, dtype=self.packed.dtype))
        if probe.device.type != "cpu" or probe.dtype != self.packed.dtype:
            raise RuntimeError(f"this model's decoder is packed for CPU inference in {self.packed.dtype}; it cannot move to "
                               f"{probe.device} / {probe.dtype}. Load it again (radgen.generate.load_model(..., device=...)) instead")
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        twin = PackedLinear.from_weight(self.weight.clone(), None if self.bias is None else self.bias.detach().clone(), self.rows_hint)
        twin.training = self.training
        return twin

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        save_dense_state(self, destination, prefix, keep_vars)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, packed for oneDNN ({self.rows_hint} rows)"


def save_dense_state(layer: nn.Module, destination: dict, prefix: str, keep_vars: bool) -> None:
    """An inference-only Linear's state as nn.Linear's: its `weight` property (unpacked) and its bias."""
    destination[prefix + "weight"] = layer.weight
    if layer.bias is not None:
        destination[prefix + "bias"] = layer.bias if keep_vars else layer.bias.detach()
