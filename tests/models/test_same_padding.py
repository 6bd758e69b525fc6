"""TF "same" convolutions folded into the convolution (radgen.models.same_padding) compute what
timm's Conv2dSame computes, for every size parity, stride and kernel a tf_* network uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers.conv2d_same import Conv2dSame

from radgen.models.same_padding import SameConv2d, _same_padding, fold_same_padding


def _tf_same(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """TF's definition, independent of timm: pad so that out = ceil(in / stride), the odd pixel after."""
    pads = []
    for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(conv.kernel_size), reversed(conv.stride)):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), conv.weight, conv.bias, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize("height,width", [(16, 16), (15, 15), (16, 15), (7, 10)])
@pytest.mark.parametrize("kernel,stride,groups", [(3, 2, 1), (3, 2, 8), (5, 2, 8), (3, 1, 8), (1, 1, 1), (4, 2, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_equals_timm_and_tf(height, width, kernel, stride, groups, channels_last):
    torch.manual_seed(kernel * 10 + stride)
    timm_conv = Conv2dSame(8, 16, kernel, stride=stride, groups=groups, bias=groups == 1).eval()
    model = torch.nn.Sequential(timm_conv)
    x = torch.randn(2, 8, height, width)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, reference = timm_conv(x), _tf_same(x, timm_conv)
        assert fold_same_padding(model) == 1
        folded = model[0]
        assert type(folded) is SameConv2d and folded.weight is timm_conv.weight and folded.bias is timm_conv.bias
        got = folded(x)
    assert got.shape == want.shape == reference.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_lopsided_padding_is_what_makes_the_kernel_grow():
    assert _same_padding(224, 3, 2) == (0, 1)  # EfficientNet's stride-2 3x3 on an even map
    assert _same_padding(56, 5, 2) == (1, 2)
    assert _same_padding(225, 3, 2) == (1, 1)
    assert _same_padding(14, 3, 1) == (1, 1)


def test_only_timm_same_convolutions_with_dilation_1_are_replaced():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Conv2dSame(4, 4, 3, dilation=2), Conv2dSame(4, 4, 3, stride=2))
    assert fold_same_padding(model) == 1
    assert [type(m) for m in model] == [torch.nn.Conv2d, Conv2dSame, SameConv2d]


def test_the_shipped_encoder_kind_gets_folded_at_inference():
    from radgen.config import load_recipe
    from radgen.models import build_model
    from radgen.models.fast import prepare_for_inference

    torch.manual_seed(0)
    model = build_model(load_recipe("radgen-small", size="tiny")).eval()
    if not any(type(m) is Conv2dSame for m in model.encoder.modules()):
        pytest.skip("the tiny radgen-small encoder has no TF-same convolutions")
    size = model.image_transform.size
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        before = model.encoder(pixels)
    prepare_for_inference(model, "float32")
    assert not any(type(m) is Conv2dSame for m in model.modules())
    assert any(type(m) is SameConv2d for m in model.encoder.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(pixels), before, atol=1e-5, rtol=1e-4)
