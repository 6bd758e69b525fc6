"""Seed 002 stitches up to 4 views side by side into one image: the recipe's preprocessing must keep
every view whole (LLaVA-1.5 `image_aspect_ratio: pad`), whether the CLIP tower comes from the
architecture table (hub id) or from a local weights folder whose preprocessor_config.json says
centre crop. Each half of each view is a distinct constant gray level; every level must reach the
model's input tensor (a centre crop drops the outer halves of 2 views and views 1 and 4 of 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.config import load_recipe
from radgen.data.images import ImageTransform, stitch_images
from radgen.errors import ConfigError
from radgen.models import build_model

# tiny CLIP tower at 64 px so every half-view keeps interior pixels untouched by bicubic blending
SIZE = 64
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "image_size": SIZE, "patch_size": 16, "projection_dim": 16}


def _views(n: int) -> tuple[list[Image.Image], list[int]]:
    """n square views (40 x 40), left half and right half each a distinct gray level."""
    levels = [int(v) for v in np.linspace(20, 235, 2 * n)]
    views = []
    for i in range(n):
        array = np.empty((40, 40), dtype=np.uint8)
        array[:, :20], array[:, 20:] = levels[2 * i], levels[2 * i + 1]
        views.append(Image.fromarray(array, mode="L"))
    return views, levels


def _gray(transform: ImageTransform, image: Image.Image) -> np.ndarray:
    """The transform's output back on the 0..255 scale (channel 0)."""
    out = transform(image)
    return (out[0].numpy() * transform.std[0] + transform.mean[0]) * 255.0


def _levels_present(gray: np.ndarray, levels: list[int]) -> list[int]:
    return [level for level in levels if int((np.abs(gray - level) < 1.0).sum()) >= 4]


def _tiny_llava(*overrides: str):
    torch.manual_seed(0)
    return build_model(load_recipe("llava-two-stage", size="tiny", overrides=[f"model.encoder.config={json.dumps(TINY_CLIP)}", *overrides]))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A local CLIP vision checkpoint whose processor config asks for CLIP's own centre crop."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    folder = tmp_path_factory.mktemp("clip-folder")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": SIZE, "width": SIZE}, "do_center_crop": True, "size": {"shortest_edge": SIZE},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder


@pytest.mark.parametrize("source", ["table", "folder"])
@pytest.mark.parametrize("n_views", [2, 4])
def test_every_view_survives_the_recipe_preprocessing(source, n_views, request):
    overrides = []
    if source == "folder":
        overrides = [f"model.encoder.name={request.getfixturevalue('clip_folder')}", "model.encoder.pretrained=true"]
    model = _tiny_llava(*overrides)
    transform = model.image_transform
    assert transform.resize == "pad" and transform.size == SIZE
    views, levels = _views(n_views)
    gray = _gray(transform, stitch_images(views, max_images=4))
    assert _levels_present(gray, levels) == levels
    # the stitch is wider than tall: the top row is fill, LLaVA's mean colour, normalised to 0 in every channel
    assert torch.all(transform(stitch_images(views))[:, 0] == 0)


@pytest.mark.parametrize("n_views", [2, 4])
def test_a_centre_crop_would_lose_views(n_views):
    # the check above can fail: CLIP's own centre crop keeps the middle half of a 2-view stitch
    # (each view loses its outer half) and only views 2 and 3 of a 4-view stitch
    views, levels = _views(n_views)
    crop = ImageTransform(SIZE, mean=(0.5,), std=(0.5,), resize="shortest_edge_crop")
    present = _levels_present(_gray(crop, stitch_images(views)), levels)
    assert levels[0] not in present and levels[-1] not in present


def test_pad_places_a_wide_image_centred():
    image = Image.new("L", (40, 10), 255)
    out = ImageTransform(8, mean=(0.0,), std=(1.0,), resize="pad")(image)  # 8 x 2 band in rows 3..4
    assert out.shape == (3, 8, 8)
    assert torch.all(out[:, 3:5] == 1.0) and torch.all(out[:, :3] == 0) and torch.all(out[:, 5:] == 0)


def test_stitch_with_a_centre_crop_is_refused():
    with pytest.raises(ConfigError, match=r"model\.encoder\.processor\.resize=pad"):
        _tiny_llava("model.encoder.processor.resize=shortest_edge_crop")
    assert _tiny_llava("model.encoder.processor.resize=shortest_edge_crop", "data.images=first_frontal").image_transform.resize == "shortest_edge_crop"
