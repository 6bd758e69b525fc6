"""Saving and loading a ReportGenerator as one folder.

    DIR/README.md              model card: YAML header (library_name, tags, base model, license) +
                               what the model is and is not for; always written
    DIR/model_card.json        the card's fields as given by whoever trained the model (when given)
    DIR/radgen_config.yaml     the recipe (model built from it)
    DIR/radgen_meta.json       what the weights file holds, architecture configs, image processor
    DIR/model.safetensors      weights: all of them (base_weights=True) or only those not
                               recoverable from their pretrained source (see below); LoRA excluded
    DIR/adapter/               the decoder's LoRA in peft's own format (adapter_config.json +
                               adapter_model.safetensors): `PeftModel.from_pretrained(decoder, DIR/adapter)`
    DIR/tokenizer/             the decoder's tokenizer

Folders written before the adapter/ folder existed keep LoRA inside model.safetensors; they load
as before.

base_weights=True: the folder is self-contained; loading builds every component at random from the
saved architecture configs (no network, no hub id needed) and loads all weights.
base_weights=False: only weights that differ from the pretrained sources are stored — components
built without pretrained weights, adapters (LoRA / soft prompt / prefix), and every parameter that
was ever trainable (`model.touched`) — and loading rebuilds the base from the recipe's sources
first. This keeps the shipped radgen-small under a few MB.

Writes go through radgen.io.atomic_dir: a crash never leaves a half-written model folder.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from radgen.config import RecipeConfig, from_dict, recipe_to_yaml
from radgen.errors import ConfigError, WeightsError
from radgen.io import atomic_dir
from radgen.models.fast import base_model
from radgen.models.memory import ReportMemory
from radgen.models.peft import is_adapter_key
from radgen.version import __version__

CONFIG_FILE = "radgen_config.yaml"
META_FILE = "radgen_meta.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
CARD_JSON = "model_card.json"
README_FILE = "README.md"


def _lora_keys(model) -> set[str]:
    """radgen state-dict keys of the decoder's peft LoRA weights (empty when merged or not LoRA)."""
    from peft import PeftModel

    if model.merged or not isinstance(model.decoder, PeftModel):
        return set()
    return {k for k in model.state_dict() if k.startswith("decoder.") and "lora_" in k}


def _component(name: str) -> str:
    return name.split(".", 1)[0]


def _full_components(model) -> set[str]:
    """Components whose weights do not come from a pretrained source."""
    spec = model.recipe.model
    full = {"prompt", "findings"}  # radgen's own components: no pretrained source
    if not spec.encoder.pretrained:
        full.add("encoder")
    if not (spec.connector.kind == "qformer" and spec.connector.name and spec.connector.pretrained):
        full.add("connector")
    if not spec.decoder.pretrained:
        full.add("decoder")
    return full


def _keys_to_save(model, base_weights: bool) -> list[str]:
    state_keys = list(model.state_dict().keys())
    if base_weights:
        return state_keys
    full = _full_components(model)
    touched_components = {_component(n) for n in model.touched}
    buffers = {name for name, _ in model.named_buffers()}
    keep = []
    for key in state_keys:
        component = _component(key)
        if (component in full or is_adapter_key(key) or key in model.touched
                # a trained component's buffers (batch-norm statistics) changed with its weights
                or (key in buffers and component in touched_components)
                # a head radgen adds to a pretrained tower (MedCLIP-style projection) has no source
                or key.startswith("encoder.projection.")):
            keep.append(key)
    return keep


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied embeddings); keep the first name of each."""
    seen: dict[tuple, str] = {}
    out = {}
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if ident in seen:
            continue
        seen[ident] = key
        out[key] = tensor.detach().contiguous().cpu()
    return out


def _architectures(model) -> dict[str, Any]:
    arch: dict[str, Any] = {}
    enc = model.encoder
    arch["processor"] = {"size": enc.image_size, "mean": list(enc.mean), "std": list(enc.std), "resize": enc.resize}
    inner = getattr(enc, "model", None)
    if hasattr(inner, "config") and hasattr(inner.config, "to_json_string"):
        arch["encoder"] = json.loads(inner.config.to_json_string())
    base = base_model(model.decoder)
    arch["decoder"] = json.loads(base.config.to_json_string())
    qformer = getattr(model.connector, "qformer", None)
    if qformer is not None:
        arch["qformer"] = json.loads(qformer.config.to_json_string())
    return arch


def save_pretrained(model, directory: str | Path, base_weights: bool = True) -> None:
    from safetensors.torch import save_file

    if getattr(model, "batch_norms_folded", False):
        raise ConfigError(f"{directory}: this model was prepared for inference (its image encoder's batch norms are folded "
                          "into its convolutions, radgen.models.fast); save one loaded by ReportGenerator.from_pretrained instead")

    quantized = model.recipe.model.decoder.load_in_8bit or model.recipe.model.decoder.load_in_4bit
    if quantized and not model.merged:
        # int8/int4 bitsandbytes weights cannot be rebuilt from a random float model; keep only what
        # trained and re-load the quantised base from its source.
        base_weights = False
    if model.merged:
        base_weights = True  # merged LoRA changed every targeted base weight
    recipe = copy.deepcopy(model.recipe)
    if model.merged:
        recipe.model.peft.method = "none"
    lora = _lora_keys(model)
    keys = set(_keys_to_save(model, base_weights)) - lora  # LoRA goes to adapter/ in peft's format
    state = {k: v for k, v in model.state_dict().items() if k in keys}
    state = _dedupe_shared(state)
    meta = {
        "radgen_version": __version__,
        "base_weights": base_weights,
        "merged": model.merged,
        "touched": sorted(model.touched),
        "num_tensors": len(state),
        "adapter": ADAPTER_DIR if lora else None,
        "architectures": _architectures(model),
    }
    card = getattr(model, "card", None)
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(recipe_to_yaml(recipe))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if lora:
            model.decoder.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True, save_embedding_layers=False)
        model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if card:
            (tmp / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        (tmp / README_FILE).write_text(model_card_markdown(recipe, card, adapter=bool(lora), base_weights=base_weights))
        if getattr(model, "report_memory", None) is not None:
            model.report_memory.save(tmp)


DISCLAIMER = ("Research software: draft text from a machine-learning model, NOT a medical device and NOT for "
              "clinical use. A radiologist must write the report.")


def model_card_markdown(recipe: RecipeConfig, card: dict[str, Any] | None, adapter: bool, base_weights: bool) -> str:
    """README.md with the YAML header the Hugging Face Hub reads, then the card's fields and how to load it."""
    spec = recipe.model
    header: dict[str, Any] = {
        "library_name": "radgen",
        "pipeline_tag": "image-to-text",
        "tags": ["radiology", "chest-x-ray", "report-generation", "radgen"] + (["peft", "lora"] if adapter else []),
        "license": (card or {}).get("license", "other"),
    }
    # a hub id (org/name) is what `base_model` means on the Hub; local folders and pypi: sources are not
    if "/" in spec.decoder.name and not spec.decoder.name.startswith(("/", ".", "pypi:")) and not Path(spec.decoder.name).exists():
        header["base_model"] = spec.decoder.name
    title = (card or {}).get("name") or recipe.name
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "", f"# {title}", "", f"> {DISCLAIMER}", "",
             "## Model", "",
             f"- recipe: `{recipe.name}`{' — ' + recipe.description if recipe.description else ''}",
             f"- image encoder: `{spec.encoder.kind}` `{spec.encoder.name}`",
             f"- connector: `{spec.connector.kind}` ({spec.connector.num_tokens} visual tokens)",
             f"- text decoder: `{spec.decoder.kind}` `{spec.decoder.name}`" + (f" (`{spec.decoder.gguf_file}`)" if spec.decoder.gguf_file else ""),
             f"- fine-tuning: {spec.peft.method}" + (f" (r={spec.peft.r}, alpha={spec.peft.alpha}; peft adapter in `adapter/`)" if adapter else ""),
             f"- weights in this folder: {'all' if base_weights else 'trained ones only; the base is rebuilt from its pretrained sources'}",
             ""]
    fields = {k: v for k, v in (card or {}).items() if k not in ("name", "license") and v not in (None, "")}
    if fields:
        lines += ["## Card", ""]
        for key, value in fields.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines += [f"**{key.replace('_', ' ')}**: {text}", ""]
    else:
        lines += ["## Card", "", "No card was given (training data, intended use and limitations are unknown); "
                  "`radgen model export SRC --out DIR --card card.json` adds one.", ""]
    lines += ["## Use", "", "```python", "import radgen", "pipe = radgen.load(\"path/to/this/folder\")",
              "print(pipe(\"chest.png\")[\"findings\"])", "```", "",
              "```bash", "radgen generate scans/ --model path/to/this/folder --out preds.jsonl", "```", ""]
    if adapter:
        lines += ["The decoder's LoRA is a standard peft adapter: "
                  "`PeftModel.from_pretrained(decoder, \"path/to/this/folder/adapter\")`; the connector and "
                  "everything else radgen trained are in `model.safetensors`.", ""]
    return "\n".join(lines)


def _read(directory: Path) -> tuple[RecipeConfig, dict[str, Any]]:
    config, meta = directory / CONFIG_FILE, directory / META_FILE
    for path in (config, meta, directory / WEIGHTS_FILE):
        if not path.is_file():
            raise WeightsError(f"{directory}: not a radgen model folder ({path.name} missing); "
                               "create one with ReportGenerator.save_pretrained or `radgen train`")
    raw = yaml.safe_load(config.read_text())
    findings = ((raw or {}).get("model") or {}).get("findings") if isinstance(raw, dict) else None
    if isinstance(findings, dict) and (findings.get("members") or 1) > 1 and "member_mean" not in findings:
        # saved before model.findings.member_mean existed: its thresholds were tuned on the members' mean probability
        findings["member_mean"] = "probability"
    recipe = from_dict(RecipeConfig, raw, str(config))
    return recipe, json.loads(meta.read_text())


def read_recipe(directory: str | Path) -> RecipeConfig:
    """The recipe a saved model folder was built from (its radgen_config.yaml)."""
    return _read(Path(directory))[0]


def _self_contained_recipe(recipe: RecipeConfig, meta: dict[str, Any], directory: Path, scratch: Path) -> RecipeConfig:
    """A copy of `recipe` that builds every component from the saved architecture configs."""
    build = copy.deepcopy(recipe)
    arch = meta["architectures"]
    spec = build.model
    spec.encoder.pretrained = False
    spec.encoder.weights = None  # every weight is in this folder; the original file need not exist here
    spec.encoder.processor = {**spec.encoder.processor, **arch["processor"]}
    if "encoder" in arch:
        (scratch / "encoder").mkdir()
        (scratch / "encoder" / "config.json").write_text(json.dumps(arch["encoder"]))
        spec.encoder.name, spec.encoder.config = str(scratch / "encoder"), {}
    if "qformer" in arch:
        (scratch / "qformer").mkdir()
        (scratch / "qformer" / "config.json").write_text(json.dumps(arch["qformer"]))
        spec.connector.name, spec.connector.config, spec.connector.pretrained = str(scratch / "qformer"), {}, False
    (scratch / "decoder").mkdir()
    (scratch / "decoder" / "config.json").write_text(json.dumps(arch["decoder"]))
    spec.decoder.name, spec.decoder.config, spec.decoder.gguf_file = str(scratch / "decoder"), {}, None
    spec.decoder.pretrained = False
    spec.decoder.load_in_8bit = spec.decoder.load_in_4bit = False
    spec.decoder.tokenizer = str(directory / "tokenizer")
    return build


def load_pretrained(directory: str | Path, build: Callable[..., Any], device: str | torch.device | None = None):
    """The model saved in `directory`; `build(recipe, apply_first_stage=False)` makes the empty model
    (radgen.models.build_model, passed in by ReportGenerator.from_pretrained: this module sits below it)."""
    import tempfile

    from safetensors.torch import load_file

    directory = Path(directory)
    recipe, meta = _read(directory)
    if meta.get("base_weights", True):
        with tempfile.TemporaryDirectory() as scratch:
            model = build(_self_contained_recipe(recipe, meta, directory, Path(scratch)), apply_first_stage=False)
    else:
        rebuilt = copy.deepcopy(recipe)
        if not (rebuilt.model.decoder.tokenizer or "").startswith("builtin:"):
            rebuilt.model.decoder.tokenizer = str(directory / "tokenizer")  # no hub access for the tokenizer
        model = build(rebuilt, apply_first_stage=False)
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
    model.recipe = recipe
    state = load_file(str(directory / WEIGHTS_FILE))
    _match_dtypes(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise WeightsError(f"{directory / WEIGHTS_FILE}: {len(unexpected)} weights do not belong to this recipe's model "
                           f"(e.g. {unexpected[:3]}); was the folder written by another radgen version or recipe?")
    if meta.get("adapter"):
        loaded = _load_adapter(model, directory / meta["adapter"])
        missing = [k for k in missing if k not in loaded]
    if meta.get("base_weights", True):
        _check_only_tied_missing(model, missing, state, directory)
    card_path = directory / CARD_JSON
    model.card = json.loads(card_path.read_text()) if card_path.is_file() else None
    model.touched = set(meta.get("touched", []))
    model.report_memory = ReportMemory.load(directory)
    model.requires_grad_(False)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _load_adapter(model, folder: Path) -> set[str]:
    """Load DIR/adapter (peft format) into the decoder's LoRA layers; returns the radgen keys it filled."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    expected = _lora_keys(model)
    if not (folder / "adapter_config.json").is_file() or not expected:
        raise WeightsError(f"{folder}: radgen_meta.json names this LoRA adapter folder but it is missing or the recipe has "
                           "no LoRA; copy the whole model folder (adapter/ included)")
    weights = load_peft_weights(str(folder), device="cpu")
    result = set_peft_model_state_dict(model.decoder, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected or len(weights) != len(expected):
        raise WeightsError(f"{folder}: adapter has {len(weights)} tensors for {len(expected)} LoRA weights of this recipe "
                           f"(unexpected e.g. {unexpected[:3]}); was it saved from another recipe or LoRA config?")
    return expected


def saved_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor a model folder stores, under the model's own state-dict keys: model.safetensors
    plus adapter/ (peft's keys drop the adapter name and the `decoder.` prefix; both are put back).
    For code that loads a folder's weights into an existing model (`train.init_from`)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    state = load_file(str(directory / WEIGHTS_FILE))
    adapter = directory / ADAPTER_DIR / "adapter_model.safetensors"
    if adapter.is_file():
        for key, tensor in load_file(str(adapter)).items():
            parts = key.split(".")
            at = next((i for i, part in enumerate(parts) if part.startswith("lora_")), None)
            if at is None:
                raise WeightsError(f"{adapter}: '{key}' is not a LoRA weight; radgen writes LoRA adapters only")
            parts.insert(at + 1, "default")  # peft's adapter name inside a model; files omit it
            state["decoder." + ".".join(parts)] = tensor
    return state


def _match_dtypes(model, state: dict[str, torch.Tensor]) -> None:
    """Give each parameter/buffer the dtype it was saved in (a bf16-trained model reloads as bf16,
    not upcast to the float32 it was rebuilt in), so outputs stay identical."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        saved = state.get(name)
        if saved is not None and saved.dtype != tensor.dtype and saved.dtype.is_floating_point:
            tensor.data = tensor.data.to(saved.dtype)


def _check_only_tied_missing(model, missing: list[str], loaded: dict[str, torch.Tensor], directory: Path) -> None:
    """With all weights saved, a missing key is fine only if it shares memory with a loaded one."""
    if not missing:
        return
    state = model.state_dict()
    loaded_ptrs = {state[k].untyped_storage().data_ptr() for k in loaded if k in state}
    really_missing = [k for k in missing if state[k].untyped_storage().data_ptr() not in loaded_ptrs]
    if really_missing:
        raise WeightsError(f"{directory / WEIGHTS_FILE}: {len(really_missing)} weights missing (e.g. {really_missing[:3]}); "
                           "the file is incomplete or from another recipe")
