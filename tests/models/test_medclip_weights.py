"""MedCLIP's own checkpoint layout loads into clipcap-prefix's Swin-T tower + projection (seed 004).

The checkpoints are written here in MedCLIP v0.0.3's layout (MedCLIPModel.state_dict(): keys
`vision_model.model.*` with transformers-4 Swin names, `vision_model.projection_head.weight`,
`text_model.*`, `logit_scale`) from a tiny tower with known weights, so a mapping that drops,
misnames or transposes anything fails the equality checks.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from radgen.config import load_recipe
from radgen.errors import WeightsError
from radgen.models import build_model
from radgen.models.medclip import MEDCLIP_PROCESSOR

# transformers 5 Swin names → the transformers 4 names MedCLIP's release was saved with (inverse of
# radgen.models.medclip's table, written out independently)
_V5_TO_V4 = (
    ("mlp.fc2", "output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("attention.o_proj", "attention.output.dense"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.q_proj", "attention.self.query"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
)


def _tiny(*overrides: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_recipe("clipcap-prefix", size="tiny", overrides=list(overrides)))


def _medclip_state(encoder, v4_names: bool = True) -> dict[str, torch.Tensor]:
    """The tiny encoder's weights as MedCLIPModel.state_dict() would hold them."""
    state: dict[str, torch.Tensor] = {}
    for key, value in encoder.state_dict().items():
        if key == "projection.weight":
            state["vision_model.projection_head.weight"] = value.clone()
            continue
        name = key[len("model."):]
        if v4_names:
            for new, old in _V5_TO_V4:
                name = name.replace(new, old)
        state[f"vision_model.model.{name}"] = value.clone()
    if v4_names:  # transformers 4 saved Swin's relative_position_index buffers with the weights
        for name, buffer in encoder.model.named_buffers():
            if name.endswith("relative_position_index"):
                old = name.replace("relative_position_bias.relative_position_index", "self.relative_position_index")
                state[f"vision_model.model.{old}"] = buffer.clone()
    state["text_model.model.embeddings.word_embeddings.weight"] = torch.randn(10, 8)
    state["text_model.projection_head.weight"] = torch.randn(16, 8)
    state["logit_scale"] = torch.tensor(2.6593)
    return state


def _load(weights, *overrides: str):
    return _tiny("model.encoder.pretrained=true", f"model.encoder.weights={weights}", *overrides, seed=1).encoder


def test_medclip_folder_with_pytorch_model_bin_loads_tower_and_projection(tmp_path):
    source = _tiny().encoder
    folder = tmp_path / "medclip-vit-pretrained"
    folder.mkdir()
    torch.save(_medclip_state(source), folder / "pytorch_model.bin")
    loaded = _load(folder)
    expected = source.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    pixels = torch.randn(2, 3, source.image_size, source.image_size)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(pixels), source.eval()(pixels))
    # MedCLIP's preprocessing (grey mean/std, padded to a square) comes with its weights
    assert (loaded.mean, loaded.std, loaded.resize) == (MEDCLIP_PROCESSOR["mean"], MEDCLIP_PROCESSOR["std"], "pad")


def test_vision_model_alone_in_current_names_as_safetensors(tmp_path):
    # MedCLIPVisionModelViT.state_dict() (what load_from_medclip produces), saved by transformers 5
    source = _tiny().encoder
    state = {k[len("vision_model."):]: v.contiguous() for k, v in _medclip_state(source, v4_names=False).items()
             if k.startswith("vision_model.")}
    save_file(state, str(tmp_path / "vision.safetensors"))
    loaded = _load(tmp_path / "vision.safetensors")
    assert torch.equal(loaded.projection.weight, source.projection.weight)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in source.model.state_dict().items())


def test_explicit_processor_overrides_win_over_medclip_preprocessing(tmp_path):
    torch.save(_medclip_state(_tiny().encoder), tmp_path / "pytorch_model.bin")
    loaded = _load(tmp_path / "pytorch_model.bin", "model.encoder.processor={mean: [0.5, 0.5, 0.5], resize: squash}")
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.resize == "squash"
    assert loaded.std == MEDCLIP_PROCESSOR["std"]


@pytest.mark.parametrize("drop, named", [
    ("vision_model.projection_head.weight", "vision_model.projection_head.weight"),
    ("vision_model.model.layernorm.weight", "vision_model.model.layernorm.weight"),
])
def test_a_checkpoint_missing_keys_is_refused_in_one_line_naming_file_and_keys(tmp_path, drop, named):
    state = _medclip_state(_tiny().encoder)
    del state[drop]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError) as err:
        _load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "pytorch_model.bin") in message and "1 missing keys" in message and named in message


def test_another_tower_size_is_refused_not_half_loaded(tmp_path):
    # a full-size MedCLIP file on the tiny tower: shapes differ (here: a wider projection)
    state = _medclip_state(_tiny().encoder)
    state["vision_model.projection_head.weight"] = torch.zeros(512, 16)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"of another shape \(e\.g\. projection\.weight: \(512, 16\)"):
        _load(tmp_path)


def test_medclip_resnet_checkpoint_and_empty_folder_are_named(tmp_path):
    torch.save({"vision_model.model.conv1.weight": torch.zeros(64, 3, 7, 7), "vision_model.model.fc.weight": torch.zeros(512, 2048),
                "logit_scale": torch.tensor(1.0)}, tmp_path / "resnet.bin")
    with pytest.raises(WeightsError, match=r"ResNet-50 checkpoint"):
        _load(tmp_path / "resnet.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"folder '.*empty' has no pytorch_model\.bin"):
        _load(tmp_path / "empty")


class _NotATensor:
    """A pickled object of this class must never be rebuilt from a weights file."""


def test_pickled_objects_are_not_unpickled(tmp_path):
    state = _medclip_state(_tiny().encoder)
    state["extra"] = _NotATensor()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"weights_only=True"):
        _load(tmp_path)


def test_saved_model_keeps_medclip_weights_and_preprocessing(tmp_path):
    from radgen.models import ReportGenerator

    source = _tiny().encoder
    torch.save(_medclip_state(source), tmp_path / "pytorch_model.bin")
    model = _tiny("model.encoder.pretrained=true", f"model.encoder.weights={tmp_path}", seed=1)
    assert model.image_transform.mean == MEDCLIP_PROCESSOR["mean"]  # the dataset's transform follows the weights
    model.save_pretrained(str(tmp_path / "saved"))
    (tmp_path / "pytorch_model.bin").unlink()  # the saved folder is self-contained
    again = ReportGenerator.from_pretrained(str(tmp_path / "saved"))
    assert torch.equal(again.encoder.projection.weight, source.projection.weight)
    assert (again.encoder.mean, again.encoder.std, again.encoder.resize) == (MEDCLIP_PROCESSOR["mean"], MEDCLIP_PROCESSOR["std"], "pad")
