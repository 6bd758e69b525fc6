"""Saved models: peft adapter folder + radgen weights, README.md card with a YAML header, old format still loads."""

import copy
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from radgen.cli import main
from radgen.config import load_recipe
from radgen.models import ReportGenerator, build_model


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    model = build_model(load_recipe("radgen-small", size="tiny", overrides=["generate.num_beams=1"])).eval()
    with torch.no_grad():  # LoRA B starts at zero; make the adapter change the outputs so the checks can fail
        for name, param in model.decoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


def _reports(model, pixels):
    """Token log-probs of greedy reports, flattened (equal up to float noise between two loads)."""
    return [v for r in model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6) for v in r.token_logprobs]


def test_lora_is_a_peft_adapter_loadable_on_the_bare_decoder(lora_model, tmp_path):
    from peft import PeftModel

    folder = tmp_path / "model"
    lora_model.save_pretrained(str(folder))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (folder / "adapter").iterdir()}
    assert not [k for k in load_file(str(folder / "model.safetensors")) if "lora_" in k]
    assert json.loads((folder / "radgen_meta.json").read_text())["adapter"] == "adapter"

    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        expected = lora_model.decoder(input_ids=ids).logits
    base = copy.deepcopy(lora_model.decoder).unload()  # the decoder without LoRA layers (not merged)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, expected)  # the adapter matters
        restored = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
        assert torch.allclose(restored(input_ids=ids).logits, expected, atol=1e-5)

    pixels = torch.randn(2, 3, 64, 64)
    reloaded = ReportGenerator.from_pretrained(str(folder))
    assert _reports(reloaded, pixels) == pytest.approx(_reports(lora_model, pixels), abs=1e-5)


def test_readme_card_has_a_yaml_header_and_is_always_written(lora_model, tmp_path):
    folder = tmp_path / "model"
    lora_model.save_pretrained(str(folder))
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["library_name"] == "radgen" and header["pipeline_tag"] == "image-to-text" and "lora" in header["tags"]
    assert "NOT a medical device" in text and "No card was given" in text and not (folder / "model_card.json").exists()

    # export carries the source's card without --card; --card replaces it
    card = {"name": "tiny test model", "trained_on": "nothing (random weights)", "license": "apache-2.0"}
    (folder / "model_card.json").write_text(json.dumps(card))
    assert main(["model", "export", str(folder), "--out", str(tmp_path / "exported")]) == 0
    exported = (tmp_path / "exported" / "README.md").read_text()
    assert json.loads((tmp_path / "exported" / "model_card.json").read_text()) == card
    assert "# tiny test model" in exported and "nothing (random weights)" in exported and "license: apache-2.0" in exported
    assert (tmp_path / "exported" / "adapter" / "adapter_config.json").is_file()
    (tmp_path / "other.json").write_text(json.dumps({"trained_on": "elsewhere"}))
    # export keeps the stored precision, also where inference would pick bf16 (a CPU with native bf16)
    import radgen.models.fast as fast

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(fast.NO_FAST_PATHS_ENV, raising=False)
        patch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        patch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": True})
        patch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "bfloat16"
        assert main(["model", "export", str(folder), "--out", str(tmp_path / "fp32")]) == 0
    source = load_file(str(folder / "adapter" / "adapter_model.safetensors"))
    exported_adapter = load_file(str(tmp_path / "fp32" / "adapter" / "adapter_model.safetensors"))
    assert source.keys() == exported_adapter.keys() and all(torch.equal(source[k], exported_adapter[k]) for k in source)
    assert main(["model", "export", str(folder), "--out", str(tmp_path / "re"), "--card", str(tmp_path / "other.json")]) == 0
    assert json.loads((tmp_path / "re" / "model_card.json").read_text()) == {"trained_on": "elsewhere"}


def test_folders_in_the_old_format_lora_inside_model_safetensors_still_load(lora_model, tmp_path):
    folder = tmp_path / "old"
    lora_model.save_pretrained(str(folder))
    # rewrite as the earlier format: LoRA under radgen's own keys in model.safetensors, no adapter/
    state = load_file(str(folder / "model.safetensors"))
    state.update({k: v.contiguous() for k, v in lora_model.state_dict().items() if "lora_" in k})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    meta = json.loads((folder / "radgen_meta.json").read_text())
    del meta["adapter"]
    (folder / "radgen_meta.json").write_text(json.dumps(meta))
    for file in (folder / "adapter").iterdir():
        file.unlink()
    (folder / "adapter").rmdir()
    pixels = torch.randn(1, 3, 64, 64)
    assert _reports(ReportGenerator.from_pretrained(str(folder)), pixels) == pytest.approx(_reports(lora_model, pixels), abs=1e-5)


def test_saved_weights_put_the_adapter_back_under_model_keys_for_init_from(lora_model, tmp_path):
    from radgen.models.persist import saved_weights
    from radgen.train.checkpoint import load_model_state

    folder = tmp_path / "model"
    lora_model.save_pretrained(str(folder))
    state = saved_weights(folder)
    own = lora_model.state_dict()
    lora = [k for k in own if "lora_" in k]
    assert lora and all(torch.equal(state[k], own[k]) for k in lora)
    torch.manual_seed(1)
    fresh = build_model(load_recipe("radgen-small", size="tiny"))
    assert not torch.equal(fresh.state_dict()[lora[-1]], own[lora[-1]])
    assert load_model_state(fresh, folder) == len(state)  # train.init_from=RUN/best
    assert all(torch.equal(fresh.state_dict()[k], own[k]) for k in lora)
