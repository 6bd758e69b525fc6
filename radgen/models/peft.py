"""Parameter-efficient fine-tuning of the decoder: LoRA (peft) and prompt tuning (a learned soft prompt).

LoRA target modules differ by decoder family (the attention projections are named differently);
`default_lora_targets` gives the usual choice per family, a recipe may name its own (seed 000:
OPT q_proj + k_proj). Prompt tuning is a learned soft prompt owned by radgen (`SoftPrompt`):
the visual tokens are already passed as `inputs_embeds`, so a few more learned embeddings after
them is the whole method, and it avoids peft's prompt-learning wrapper re-ordering the sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from radgen.config import PeftConfig
from radgen.errors import ConfigError

LORA_TARGETS = {
    "opt": ["q_proj", "k_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "blip_text_model": ["query", "value"],
    "bert": ["query", "value"],
}
ADAPTER_MARKERS = ("lora_", "soft_prompt")


def base_model(decoder: nn.Module) -> nn.Module:
    """The model under a peft wrapper (the decoder itself when it has none)."""
    return decoder.get_base_model() if hasattr(decoder, "get_base_model") else decoder


def default_lora_targets(model_type: str) -> list[str]:
    from radgen.models.decoders import family

    targets = LORA_TARGETS.get(family(model_type))
    if targets is None:
        raise ConfigError(f"no default LoRA targets for decoder type '{model_type}'; set model.peft.target_modules")
    return list(targets)


def is_adapter_key(name: str) -> bool:
    return any(marker in name for marker in ADAPTER_MARKERS)


def apply_peft(decoder: nn.Module, cfg: PeftConfig, causal: bool) -> nn.Module:
    """Wrap the decoder for `cfg.method` ('none'/'prompt' leave it unchanged)."""
    if cfg.method in ("none", "prompt"):
        return decoder
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.CAUSAL_LM if causal else None
    model_type = decoder.config.model_type
    if cfg.method == "lora":
        targets = cfg.target_modules or default_lora_targets(model_type)
        config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                            task_type=task, fan_in_fan_out=model_type == "gpt2", bias="none")
    elif cfg.method == "prefix":
        # peft's PrefixTuning trains, but its generate() replaces prepare_inputs_for_generation with
        # one that cannot take inputs_embeds (peft 0.21 / transformers 5.24), and our visual tokens
        # are inputs_embeds; seeding HF generate with the prefix cache mis-aligns cache positions.
        raise ConfigError("model.peft.method=prefix (peft PrefixTuning) cannot generate from visual-token embeddings; "
                          "use model.peft.method=prompt (learned soft prompt) or connector.kind=prefix_mapper (ClipCap prefix)")
    else:
        raise ConfigError(f"model.peft.method '{cfg.method}' is unknown; use none, lora or prompt")
    return get_peft_model(decoder, config)


class SoftPrompt(nn.Module):
    """`num_virtual_tokens` learned embeddings placed after the visual tokens (prompt tuning)."""

    def __init__(self, num_tokens: int, width: int, init: torch.Tensor | None = None):
        super().__init__()
        weight = init.clone() if init is not None else torch.randn(num_tokens, width) * 0.02
        self.soft_prompt = nn.Parameter(weight)

    def forward(self, batch: int) -> torch.Tensor:
        return self.soft_prompt.unsqueeze(0).expand(batch, -1, -1)


def merge_lora(decoder: nn.Module) -> Any:
    """Fold LoRA into the base weights (peft merge_and_unload); other peft kinds are returned as is."""
    from peft import PeftModel
    from peft.tuners.lora import LoraModel

    if isinstance(decoder, PeftModel) and isinstance(decoder.base_model, LoraModel):
        return decoder.merge_and_unload()
    return decoder
