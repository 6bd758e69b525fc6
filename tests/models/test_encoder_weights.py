"""model.encoder.weights is loaded by every encoder kind or refused in one line, never ignored
(an hf_vision tower used to build random weights from a path that did not exist)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from radgen.config import load_recipe
from radgen.errors import WeightsError
from radgen.models import ReportGenerator, build_model


def _build(recipe: str, *overrides: str):
    torch.manual_seed(0)
    return build_model(load_recipe(recipe, size="tiny", overrides=list(overrides)))


@pytest.mark.parametrize("recipe", ["clipcap-prefix", "llava-two-stage", "resnet-mapper-lora"])
def test_missing_weights_file_is_an_error(recipe, tmp_path):
    with pytest.raises(WeightsError, match=r"encoder\.weights: weights file .*not found"):
        _build(recipe, "model.encoder.pretrained=true", f"model.encoder.weights={tmp_path / 'nope.safetensors'}")


def test_weights_with_pretrained_false_is_refused(tmp_path):
    with pytest.raises(WeightsError, match=r"model\.encoder\.pretrained=true"):
        _build("clipcap-prefix", f"model.encoder.weights={tmp_path / 'w.safetensors'}")


def test_hf_vision_loads_the_file_whole_encoder_or_tower_only(tmp_path):
    source = _build("clipcap-prefix").encoder  # Swin-T + MedCLIP-style projection
    whole = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(whole, str(tmp_path / "whole.safetensors"))
    torch.manual_seed(1)  # different random init: only the file can make them equal
    loaded = build_model(load_recipe("clipcap-prefix", size="tiny", overrides=[
        "model.encoder.pretrained=true", f"model.encoder.weights={tmp_path / 'whole.safetensors'}"])).encoder
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in whole.items())

    tower = _build("llava-two-stage").encoder  # no projection: a plain vision-model state dict works
    torch.save(tower.model.state_dict(), tmp_path / "tower.pt")
    torch.manual_seed(1)
    other = build_model(load_recipe("llava-two-stage", size="tiny", overrides=[
        "model.encoder.pretrained=true", f"model.encoder.weights={tmp_path / 'tower.pt'}"])).encoder
    assert all(torch.equal(other.model.state_dict()[k], v) for k, v in tower.model.state_dict().items())

    # a file that covers only part of the encoder (tower without the projection) is refused
    save_file({k: v for k, v in whole.items() if not k.startswith("projection.")}, str(tmp_path / "part.safetensors"))
    with pytest.raises(WeightsError, match=r"1 missing keys .*projection\.weight"):
        _build("clipcap-prefix", "model.encoder.pretrained=true", f"model.encoder.weights={tmp_path / 'part.safetensors'}")


def test_saved_model_loads_without_the_original_weights_file(tmp_path):
    save_file({k: v.contiguous() for k, v in _build("clipcap-prefix").encoder.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = _build("clipcap-prefix", "model.encoder.pretrained=true", f"model.encoder.weights={tmp_path / 'w.safetensors'}")
    model.save_pretrained(str(tmp_path / "saved"))  # base_weights=True: self-contained
    (tmp_path / "w.safetensors").unlink()
    again = ReportGenerator.from_pretrained(str(tmp_path / "saved"))
    assert torch.equal(again.encoder.projection.weight, model.encoder.projection.weight)
