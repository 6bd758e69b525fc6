"""MedCLIP's own checkpoint → radgen's Swin-T image tower + 768→512 projection (seed 004).

Layout followed: MedCLIP v0.0.3 (github RyanWangZf/MedCLIP, medclip/modeling_medclip.py). Its
`MedCLIPModel.from_pretrained` folder holds `pytorch_model.bin`, the state dict of the whole
dual encoder:

    vision_model.model.<HF SwinModel keys>      MedCLIPVisionModelViT.model (swin-tiny-patch4-window7-224)
    vision_model.projection_head.weight         nn.Linear(768, 512, bias=False)
    text_model.*                                Bio_ClinicalBERT + its projection (not used here)
    logit_scale                                 contrastive temperature (not used here)

MedCLIP's own `load_from_medclip` strips `vision_model.` the same way, so a state dict of
`MedCLIPVisionModelViT` alone (`model.*`, `projection_head.weight`) is read as well.

The release was saved with transformers 4.x, whose Swin names (`attention.self.query`,
`intermediate.dense`, ...) transformers 5 renamed; the old names are mapped onto whichever the
installed SwinModel uses. Images: MedCLIP's `MedCLIPFeatureExtractor` pads to a square, resizes to
224 and normalises grey values with its constants IMG_MEAN / IMG_STD (medclip/constants.py), so
the tower's processor follows them when these weights are loaded (see `MEDCLIP_PROCESSOR`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from radgen.errors import WeightsError

WEIGHTS_NAME = "pytorch_model.bin"  # medclip/constants.py WEIGHTS_NAME
# medclip/constants.py IMG_MEAN / IMG_STD (one grey value, replicated over the 3 channels the Swin
# tower takes, as MedCLIPVisionModelViT.forward repeats a 1-channel input) and do_pad_square=True
MEDCLIP_PROCESSOR = {"mean": (0.5862785803043838,) * 3, "std": (0.27950088968644304,) * 3, "resize": "pad"}

_VISION_PREFIX = "vision_model."
_IGNORED_PREFIXES = ("text_model.", "logit_scale")
# transformers 4.x SwinModel names (MedCLIP's release) → transformers 5 names, applied in this
# order (attention.output.dense before output.dense); the same table as transformers 5's own
# checkpoint conversion for model type "swin".
_SWIN_V4_TO_V5 = (
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def medclip_weights_file(path: str) -> str:
    """The state-dict file behind `model.encoder.weights`: the file itself, or a MedCLIP folder's
    pytorch_model.bin (model.safetensors when the folder was converted)."""
    if os.path.isdir(path):
        for name in (WEIGHTS_NAME, "model.safetensors"):
            if (Path(path) / name).is_file():
                return str(Path(path) / name)
        raise WeightsError(f"encoder.weights: folder '{path}' has no {WEIGHTS_NAME} (MedCLIP's checkpoint file) "
                           "nor model.safetensors; point it at the folder MedCLIPModel.from_pretrained downloaded, or at the file")
    return path


def is_medclip_layout(state: dict[str, torch.Tensor]) -> bool:
    """True for MedCLIPModel's (`vision_model.*`) or MedCLIPVisionModelViT's (`projection_head.*`) state dict."""
    return any(k.startswith(_VISION_PREFIX) or k.startswith("projection_head.") for k in state)


def medclip_vision_state(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """MedCLIP's vision half renamed onto an HFVisionEncoder state dict (`target`: its keys and shapes).

    Returns the complete state for `load_state_dict(strict=True)`; a checkpoint that does not cover
    every tower weight and the projection, or whose shapes differ, raises a one-line WeightsError.
    """
    if any(k.startswith(_VISION_PREFIX) for k in state):
        vision = {k[len(_VISION_PREFIX):]: v for k, v in state.items() if k.startswith(_VISION_PREFIX)}
    else:
        vision = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    if any(k.startswith("model.conv1.") or k.startswith("model.fc.") for k in vision):
        raise WeightsError(f"encoder.weights: '{path}' is MedCLIP's ResNet-50 checkpoint (MedCLIPVisionModel); this recipe's tower "
                           "is MedCLIP-ViT (Swin-T): use the medclip-vit-pretrained checkpoint")
    out: dict[str, torch.Tensor] = {}
    for key, value in vision.items():
        if key == "projection_head.weight":
            out["projection.weight"] = value
            continue
        if not key.startswith("model."):
            continue  # not part of MedCLIPVisionModelViT's tower or head; reported below as missing ones if it mattered
        name = _renamed(key, target)
        if name is None:
            continue  # relative_position_index: a buffer computed from the window size, not a weight
        out[name] = value
    missing = sorted(k for k in target if k not in out and not k.endswith("relative_position_index"))
    unexpected = sorted(k for k in out if k not in target)
    bad = sorted(k for k in out if k in target and tuple(out[k].shape) != tuple(target[k].shape))
    if missing or unexpected or bad:
        shapes = f", {len(bad)} of another shape (e.g. {bad[0]}: {tuple(out[bad[0]].shape)} vs {tuple(target[bad[0]].shape)})" if bad else ""
        raise WeightsError(f"encoder.weights: '{path}' is not a MedCLIP-ViT checkpoint for this tower: {len(missing)} missing keys "
                           f"(e.g. {_medclip_names(missing[:3])}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}){shapes}; "
                           "give MedCLIP's medclip-vit-pretrained pytorch_model.bin with the recipe's Swin-T encoder (full size)")
    for key in target:  # derived buffers absent from the file keep the tower's own values
        out.setdefault(key, target[key])
    return out


def _renamed(key: str, target: dict[str, torch.Tensor]) -> str | None:
    """`model.<swin key>` → the name the installed SwinModel uses (None for derived buffers it lacks)."""
    if key in target:
        return key
    if key.endswith("relative_position_index"):
        return None
    name = key
    for old, new in _SWIN_V4_TO_V5:
        name = name.replace(old, new)
    return name


def _medclip_names(keys: list[str]) -> list[str]:
    """radgen names → the names MedCLIP's file would have used, so the error says what to look for."""
    return [("vision_model.projection_head.weight" if k == "projection.weight" else f"vision_model.{k}") for k in keys]
