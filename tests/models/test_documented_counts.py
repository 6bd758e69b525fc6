"""Every parameter count that docs/recipes.md states, pinned exactly at full size on the meta device.

A LoRA rank, a prefix length or a projection that changes silently moves one of these numbers; a
tolerance (±1%, ±50M) would let it through. Where a count follows from the architecture by hand,
the derivation is written next to it, so the pin is not just radgen's own output copied back.
`test_every_count_in_the_doc_is_pinned` ties the table to the document: a number added to the
document without a pin here, or a pin the document no longer states, fails.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from radgen.config import load_recipe

DOC = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


@cache
def _info(recipe: str) -> dict:
    from radgen.models.info import model_info

    return model_info(load_recipe(recipe))


def _stage(recipe: str, name: str) -> dict:
    return next(s for s in _info(recipe)["stages"] if s["name"] == name)


# (recipe, stage, what, count). what: "trainable", "total" or "<component>.<total|trainable>".
PINS = [
    # BLIP-2 OPT-2.7B, LoRA r16 on q_proj and k_proj: 32 layers x 2 modules x 16 x (2560 + 2560)
    ("blip2-opt-lora", "lora", "trainable", 5_242_880),
    ("blip2-opt-lora", "lora", "total", 3_749_922_816),
    # BLIP base: the tied word-embedding/output matrix counted once
    ("blip-captioning", "full", "trainable", 223_971_644),
    ("blip-captioning", "full", "total", 223_971_644),
    ("blip-captioning:decoder-only", "decoder-only", "trainable", 137_881_148),
    ("blip-captioning:encoder-only", "encoder-only", "trainable", 86_090_496),
    # LLaVA connector: Linear(1024, 4096) + GELU + Linear(4096, 4096) = 1024*4096+4096 + 4096*4096+4096
    ("llava-two-stage", "align", "trainable", 20_979_712),
    # + LoRA r128 on every linear layer of Vicuna-7B (4096 wide, MLP 11008), per layer:
    # q,k,v,o 4*128*(4096+4096) + gate,up 2*128*(4096+11008) + down 128*(11008+4096) = 9,994,240; x 32 layers
    ("llava-two-stage", "lora", "decoder.trainable", 319_815_680),
    ("llava-two-stage", "lora", "trainable", 340_795_392),
    ("llava-two-stage", "lora", "total", 7_382_718_464),
    # GPT-2 S + LoRA r16 on c_attn (768 -> 2304): 12 layers x 16 x (768 + 2304) = 589,824
    ("resnet-mapper-lora", "frozen-encoder", "decoder.trainable", 589_824),
    ("resnet-mapper-lora", "frozen-encoder", "trainable", 11_641_344),
    # unfrozen adds timm's ResNet50 without its classifier head (25,557,032 - 2048*1000 - 1000)
    ("resnet-mapper-lora", "unfrozen", "encoder.trainable", 23_508_032),
    ("resnet-mapper-lora", "unfrozen", "trainable", 35_149_376),
    ("resnet-mapper-lora", "unfrozen", "total", 159_589_184),
    ("resnet-mapper-lora:gpt2-large", "frozen-encoder", "trainable", 31_854_080),
    ("resnet-mapper-lora:gpt2-large", "unfrozen", "trainable", 55_362_112),
    ("resnet-mapper-lora:gpt2-large", "unfrozen", "total", 829_392_192),
    # OpenLLaMA-7B LoRA r16 on q/k/v/o: 32 layers x 4 x 16 x (4096 + 4096) = 16,777,216
    ("resnet-mapper-lora:openllama-7b", "frozen-encoder", "decoder.trainable", 16_777_216),
    ("resnet-mapper-lora:openllama-7b", "frozen-encoder", "trainable", 293_822_464),
    ("resnet-mapper-lora:openllama-7b", "unfrozen", "trainable", 317_330_496),
    ("resnet-mapper-lora:openllama-7b", "unfrozen", "total", 7_055_746_112),
    # ClipCap: only the mapper trains (the 768 -> 512 projection is frozen). Mapper at LLM width d,
    # clip length = prefix = 64, 8 layers, MLP ratio 2: Linear(512, 64 d) + 64 d prefix constants +
    # 8 x [q (d d + d), kv (2 d d + 2 d), out (d d + d), 2 LayerNorms (4 d), fc1 (2 d d + 2 d), fc2 (2 d d + d)]
    # (derivation checked in test_hand_derivations_agree_with_the_pins)
    ("clipcap-prefix", "mapper", "encoder.trainable", 0),
    ("clipcap-prefix", "mapper", "decoder.trainable", 0),  # the LLM stays frozen
    ("clipcap-prefix", "mapper", "trainable", 63_080_448),
    ("clipcap-prefix", "mapper", "total", 215_432_826),
    ("clipcap-prefix:gpt2-medium", "mapper", "trainable", 100_884_480),
    ("clipcap-prefix:gpt2-medium", "mapper", "total", 483_620_218),
    ("clipcap-prefix:qwen1.5-0.5b", "mapper", "connector.trainable", 100_884_480),
    ("clipcap-prefix:qwen1.5-0.5b", "mapper", "encoder.trainable", 0),
    ("clipcap-prefix:qwen1.5-0.5b", "mapper", "trainable", 100_884_480),
    ("clipcap-prefix:qwen1.5-0.5b", "mapper", "total", 592_784_762),
    # Table II's fine-tuning: the same mapper + all of Qwen1.5-0.5B (1024 wide, 24 layers, MLP 2816,
    # 151,936 tokens, tied embeddings); per layer q/k/v with bias 3 (d d + d), o d d, gate/up/down
    # 3 x 1024 x 2816, 2 RMSNorms 2 d; + embeddings 151,936 d + final norm d
    ("clipcap-prefix:finetune", "finetune", "decoder.trainable", 463_987_712),
    ("clipcap-prefix:finetune", "finetune", "encoder.trainable", 0),
    ("clipcap-prefix:finetune", "finetune", "trainable", 564_872_192),
    ("clipcap-prefix:finetune", "finetune", "total", 592_784_762),
    # SmolLM2-135M (576 wide, 3 kv heads of 64 -> k/v 192 wide), LoRA r16 on q/k/v/o, 30 layers:
    # 30 x 16 x ((576+576) + (576+192) + (576+192) + (576+576)) = 1,843,200
    ("radgen-small", "align", "decoder.trainable", 1_843_200),
    ("radgen-small", "align", "connector.trainable", 4_075_200),
    ("radgen-small", "align", "findings.trainable", 1_324_557),
    ("radgen-small", "align", "trainable", 7_242_957),
    ("radgen-small", "align", "total", 145_128_973),
]


def _count(recipe: str, stage: str, what: str) -> int:
    data = _stage(recipe, stage)
    if "." in what:
        component, kind = what.split(".")
        return data["components"][component][kind]
    return data[what]


@pytest.mark.parametrize("recipe, stage, what, count", PINS, ids=[f"{r}/{s}/{w}" for r, s, w, _ in PINS])
def test_documented_count(recipe, stage, what, count):
    assert _count(recipe, stage, what) == count


def test_hand_derivations_agree_with_the_pins():
    # the arithmetic in the comments above, so a typo in a pin cannot hide behind a typo in its comment
    pins = {(r, s, w): c for r, s, w, c in PINS}
    assert 32 * 2 * 16 * (2560 + 2560) == pins["blip2-opt-lora", "lora", "trainable"]
    assert 1024 * 4096 + 4096 + 4096 * 4096 + 4096 == pins["llava-two-stage", "align", "trainable"]
    per_layer = 4 * 128 * (4096 + 4096) + 2 * 128 * (4096 + 11008) + 128 * (11008 + 4096)
    assert 32 * per_layer == pins["llava-two-stage", "lora", "decoder.trainable"]
    assert 12 * 16 * (768 + 2304) == pins["resnet-mapper-lora", "frozen-encoder", "decoder.trainable"]
    assert 25_557_032 - 2048 * 1000 - 1000 == pins["resnet-mapper-lora", "unfrozen", "encoder.trainable"]
    assert 32 * 4 * 16 * (4096 + 4096) == pins["resnet-mapper-lora:openllama-7b", "frozen-encoder", "decoder.trainable"]

    def clipcap_mapper(d: int) -> int:
        layer = (d * d + d) + (2 * d * d + 2 * d) + (d * d + d) + 4 * d + (2 * d * d + 2 * d) + (2 * d * d + d)
        return (512 * 64 * d + 64 * d) + 64 * d + 8 * layer

    assert clipcap_mapper(768) == pins["clipcap-prefix", "mapper", "trainable"]  # GPT-2 S
    assert clipcap_mapper(1024) == pins["clipcap-prefix:qwen1.5-0.5b", "mapper", "trainable"]  # Qwen1.5-0.5B
    assert clipcap_mapper(1024) == pins["clipcap-prefix:gpt2-medium", "mapper", "trainable"]  # GPT-2 M, also 1024 wide
    assert pins["clipcap-prefix", "mapper", "encoder.trainable"] == 0  # projection frozen (was 768 * 512)
    d = 1024
    qwen = 24 * (3 * (d * d + d) + d * d + 3 * d * 2816 + 2 * d) + 151_936 * d + d
    assert qwen == pins["clipcap-prefix:finetune", "finetune", "decoder.trainable"]
    assert clipcap_mapper(1024) + qwen == pins["clipcap-prefix:finetune", "finetune", "trainable"]
    assert pins["clipcap-prefix:finetune", "finetune", "total"] == pins["clipcap-prefix:qwen1.5-0.5b", "mapper", "total"]
    assert 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192)) == pins["radgen-small", "align", "decoder.trainable"]
    # finding head: LayerNorm over mean+max pooled 1280-d features, 2560 -> 256 -> 13
    # two views (frontal, lateral), each a layer norm over its 2560-d mean+max pool; one MLP over both
    assert 2 * (2 * 2560) + (2 * 2560 * 256 + 256) + (256 * 13 + 13) == pins["radgen-small", "align", "findings.trainable"]
    assert 1_324_557 + 4_075_200 + 1_843_200 == pins["radgen-small", "align", "trainable"]
    assert round(100 * 5_242_880 / pins["blip2-opt-lora", "lora", "total"], 2) == 0.14  # the paper's 0.14%


def test_settings_behind_the_counts():
    # the settings docs/recipes.md names next to the counts; a change here must come with new counts
    assert load_recipe("llava-two-stage").model.peft.r == 128
    assert load_recipe("llava-two-stage:impression").model.peft.r == 128
    clipcap = load_recipe("clipcap-prefix:qwen1.5-0.5b").model.connector
    assert (clipcap.num_tokens, clipcap.prefix_length, clipcap.num_layers) == (64, 64, 8)  # clip length = prefix = 64
    assert _info("clipcap-prefix:qwen1.5-0.5b")["num_visual_tokens"] == 64
    assert _info("radgen-small")["num_visual_tokens"] == 16
    assert _info("resnet-mapper-lora")["num_visual_tokens"] == 32
    assert _info("blip2-opt-lora")["num_visual_tokens"] == 32


def test_every_count_in_the_doc_is_pinned():
    text = DOC.read_text()
    documented = {int(n.replace(",", "")) for n in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", text)}
    pinned = {count for *_, count in PINS}
    assert documented - pinned == set(), "counts in docs/recipes.md without a pin"
    # counts pinned for the doc's sake must still be in it (the hand-derived parts may be extra)
    derived_only = {319_815_680, 589_824, 23_508_032, 16_777_216, 0}
    assert pinned - derived_only <= documented
