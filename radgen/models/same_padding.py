"""TensorFlow "same" convolutions without a separate padding pass: timm's `Conv2dSame` at inference.

timm's tf_* EfficientNets (radgen-small's EfficientNet-Lite0) pad each strided convolution's input
with `F.pad` before convolving, because TF's "same" padding of an even-sized map with stride 2 is
lopsided (0 before, 1 after for a 3x3 kernel). That pad writes a whole new feature map: at batch 32
on CPU the (32, 96, 113, 113) one alone took longer than the convolution it feeds. A lopsided pad
is the same as a symmetric one with the kernel grown by one zero row/column at its start:
out[i] = Σ_j w[j]·x[s·i + j - lo] = Σ_j w'[j]·x[s·i + j - hi] with w' = [0, w], hi = lo + 1. So
`SameConv2d` passes the padding to the convolution itself: the same products (plus exact zeros),
3-5x faster for the depthwise ones (benchmarks/cpu_kernels.py; docs/benchmarks.md, Performance), outputs equal to timm's
(tests/models/test_same_padding.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF "same" for one dimension, split as timm's `pad_same` splits it (dilation 1)."""
    # imported here, not at the top: radgen.models.fast imports this module, and importing timm costs
    # ~1.7 s that a process which never builds a timm encoder should not pay
    from timm.layers.padding import get_same_padding

    total = get_same_padding(size, kernel, stride, 1)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "same" padding for the input's size, folded into the convolution (see module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (_same_padding(n, k, s) for n, k, s in zip(x.shape[-2:], self.kernel_size, self.stride))
        weight = self.weight
        if bottom > top or right > left:
            # lopsided: one zero row/column at the kernel's start, then pad both sides by the larger amount
            weight = F.pad(weight, (right - left, 0, bottom - top, 0))
            if x.is_contiguous(memory_format=torch.channels_last):
                weight = weight.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, self.bias, self.stride, (bottom, right), 1, self.groups)


def fold_same_padding(module: nn.Module) -> int:
    """Replace each timm `Conv2dSame` (dilation 1) inside `module` by a `SameConv2d` sharing its
    weights; returns how many. Inference only (training keeps timm's modules)."""
    from timm.layers.conv2d_same import Conv2dSame
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if type(child) is Conv2dSame and child.dilation == (1, 1):
                conv = SameConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, 0, 1, child.groups,
                                  child.bias is not None, device="meta")
                conv.weight, conv.bias = child.weight, child.bias
                conv.train(child.training)
                parent._modules[name] = conv
                replaced += 1
    return replaced
