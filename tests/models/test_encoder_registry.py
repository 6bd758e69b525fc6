"""A new image-encoder kind is one file too: `patch_conv` is defined and registered here alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radgen.config import EncoderConfig
from radgen.errors import ConfigError, WeightsError
from radgen.models.encoders import ENCODERS, ImageEncoder, build_encoder, register_encoder
from radgen.models.sources import SourceCache
from tests.models.conftest import REPORTS, pixels, tiny


class PatchConv(ImageEncoder):
    """ViT-style patch embedding alone: one strided convolution, every patch a token."""

    def __init__(self, image_size: int, patch: int, width: int):
        super().__init__()
        self.conv = nn.Conv2d(3, width, patch, stride=patch)
        self.hidden_size, self.image_size, self.patch = width, image_size, patch
        self.mean = self.std = (0.5, 0.5, 0.5)

    def num_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.conv(pixel_values).flatten(2).transpose(1, 2)  # (B, N, width)


@register_encoder("patch_conv")
def build_patch_conv(cfg: EncoderConfig, sources: SourceCache) -> PatchConv:
    return PatchConv(cfg.image_size, patch=16, width=24)


def test_recipe_builds_and_runs_the_registered_encoder():
    model = tiny("radgen-small", "model.encoder.kind=patch_conv")
    assert type(model.encoder) is PatchConv
    px = pixels(model)  # 64 x 64: 16 patches of 24 channels
    assert model.encode_images(px).shape == (2, 16, 24)
    out = model(**model.tokenize_reports(REPORTS), pixel_values=px)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.connector.input_projection.weight.grad.abs().sum() > 0  # the connector took the new width


def test_unknown_encoder_kind_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        build_encoder(EncoderConfig(kind="no_such_kind", pretrained=False), SourceCache())
    message = str(err.value)
    assert "\n" not in message and message.startswith("model.encoder.kind 'no_such_kind' is unknown")
    assert message.endswith(", ".join(ENCODERS.kinds()))
    assert {"hf_vision", "timm", "efficientnet_lite0", "patch_conv"} <= set(ENCODERS.kinds())


def test_weights_without_pretrained_is_refused_before_the_kind_is_looked_up():
    with pytest.raises(WeightsError, match="pretrained=false"):
        build_encoder(EncoderConfig(kind="patch_conv", pretrained=False, weights="x.pt"), SourceCache())
