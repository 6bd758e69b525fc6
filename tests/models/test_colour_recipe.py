"""Seed 001 (blip-captioning, ROCO) keeps colour through every path a tiny model reads images by;
chest X-ray recipes stay gray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from radgen.config import load_recipe
from radgen.data.images import load_image
from radgen.data.study import ImageRef, Study
from tests.models.conftest import tiny

RED, BLUE = (220, 20, 30), (10, 40, 230)


@pytest.fixture(scope="module")
def blip():
    return tiny("blip-captioning")


@pytest.fixture
def doppler(tmp_path):
    pixels = np.full((40, 40, 3), 90, dtype=np.uint8)
    pixels[:, :20], pixels[:, 20:] = RED, BLUE
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "doppler.png")
    return tmp_path / "doppler.png"


def _raw(pixel_values: torch.Tensor, transform) -> torch.Tensor:
    """Undo the per-channel normalisation (BLIP's mean/std differ per channel, so even gray input
    gives three different normalised channels): 0..1 pixel values again."""
    mean = torch.tensor(transform.mean)[:, None, None]
    std = torch.tensor(transform.std)[:, None, None]
    return pixel_values * std + mean


def _channels_differ(pixel_values: torch.Tensor, transform) -> bool:
    raw = _raw(pixel_values, transform)
    return (raw[0] - raw[1]).abs().max() > 0.2 and (raw[1] - raw[2]).abs().max() > 0.2


def test_recipes_choose_their_colour_mode():
    assert load_recipe("blip-captioning").data.colour == "keep"  # seed 001: ROCO has Doppler / PET colour
    for variant in ("full", "decoder-only", "encoder-only"):
        assert load_recipe(f"blip-captioning:{variant}", size="tiny").data.colour == "keep"
    for name in ("blip2-opt-lora", "llava-two-stage", "resnet-mapper-lora", "clipcap-prefix", "radgen-small"):
        assert load_recipe(name).data.colour == "gray", name  # chest X-ray recipes


def test_blip_transform_sees_three_different_channels(blip, doppler):
    assert blip.image_transform.channels == 3
    colour = blip.image_transform(load_image(doppler, colour=blip.recipe.data.colour))
    assert colour.shape == (3, 32, 32) and _channels_differ(colour, blip.image_transform)
    left = _raw(colour, blip.image_transform)[:, 16, 4]
    assert torch.allclose(left, torch.tensor(RED) / 255.0, atol=0.02)  # the red half is still red
    gray = _raw(blip.image_transform(load_image(doppler, colour="gray")), blip.image_transform)
    assert torch.allclose(gray[0], gray[1], atol=1e-5) and torch.allclose(gray[1], gray[2], atol=1e-5)


def test_generation_dataset_passes_the_recipe_colour(blip, doppler):
    from radgen.generate.decode import generation_dataset

    studies = [Study("roco-1", images=[ImageRef(doppler.name, "UNKNOWN")], sections={"findings": ""})]
    dataset = generation_dataset(blip, studies, doppler.parent, "findings")
    assert dataset.colour == "keep" and _channels_differ(dataset[0]["pixel_values"], blip.image_transform)


def test_training_splits_pass_the_recipe_colour(doppler):
    from radgen.data.images import ImageTransform
    from radgen.data.study import write_manifest
    from radgen.train.data import load_splits

    studies = [Study(f"s{i}", split=split, images=[ImageRef(doppler.name, "UNKNOWN")], sections={"findings": "Flow."})
               for i, split in enumerate(("train", "val"))]
    write_manifest(doppler.parent / "manifest.jsonl", studies)
    recipe = load_recipe("blip-captioning", size="tiny", overrides=[f"data.manifest={doppler.parent / 'manifest.jsonl'}"])
    transform = ImageTransform(8)
    train, val = load_splits(recipe, transform)
    assert train.colour == val.colour == "keep"
    assert _channels_differ(train[0]["pixel_values"], transform) and _channels_differ(val[0]["pixel_values"], transform)


def test_pipeline_and_serve_decode_uploads_in_colour(blip, doppler, monkeypatch):
    from radgen.pipeline import ReportPipeline
    from radgen.serve.inference import ReportService

    pipe = ReportPipeline(blip)
    assert pipe.colour == "keep"
    seen = {}

    def fake_generate(pixel_values, **kwargs):
        seen["pixels"] = pixel_values
        return []

    monkeypatch.setattr(blip, "generate", fake_generate)
    pipe.generate([doppler])
    assert _channels_differ(seen["pixels"][0], blip.image_transform)
    prepared = ReportService(blip).prepare(doppler.read_bytes())
    assert _channels_differ(prepared.pixel_values, blip.image_transform)
