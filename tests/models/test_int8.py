"""int8 smoothing (radgen.models.int8): the fp32 function is kept, the int8 error shrinks where a
few channels carry large activations, and ranges that do not fit the decoder are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from radgen.models.fast import int8_supported
from radgen.models.int8 import (ACTIVATION_RANGES_FILE, load_activation_ranges, quantize_decoder, record_activation_ranges,
                                save_activation_ranges, smooth_for_int8)

IDS = torch.tensor([[1, 5, 9, 33, 200, 7, 64, 3], [2, 8, 11, 300, 41, 6, 90, 12]])


def _llama(outliers: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(config).eval()
    if outliers:
        # what trained LLMs have and random ones lack: a few hidden channels 30x larger than the rest at
        # every norm's output, the weights reading them scaled down to keep the function in range
        with torch.no_grad():
            for norm in [layer.input_layernorm for layer in model.model.layers] + [layer.post_attention_layernorm for layer in model.model.layers]:
                norm.weight[:3] *= 30.0
            for layer in model.model.layers:
                for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.mlp.gate_proj, layer.mlp.up_proj):
                    linear.weight[:, :3] /= 30.0
    return model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def _ranges(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return record_activation_ranges(model, lambda: model(input_ids=IDS))


def test_ranges_cover_the_inputs_smoothing_reads_and_are_maxima():
    model = _llama()
    ranges = _ranges(model)
    assert sorted(ranges) == sorted([f"layers.{i}.{name}" for i in range(2) for name in ("self_attn.q_proj", "mlp.gate_proj")] + ["lm_head"])
    # the LM head's input is the final norm's output: its per-channel maximum, computed directly
    with torch.no_grad():
        hidden = model.model(input_ids=IDS).last_hidden_state
    torch.testing.assert_close(ranges["lm_head"], hidden.abs().reshape(-1, 64).amax(0))


def test_smoothing_keeps_the_fp32_function_and_the_input_embeddings():
    model = _llama(outliers=True)
    before, embeddings = _logits(model), model.get_input_embeddings().weight.detach().clone()
    assert smooth_for_int8(model, _ranges(model)) == 2 * (3 + 2) + 1
    torch.testing.assert_close(_logits(model), before, atol=2e-5, rtol=1e-4)
    # the head was tied to the embeddings; its scaled copy must not change the token embeddings
    assert torch.equal(model.get_input_embeddings().weight, embeddings)
    assert not torch.equal(model.get_output_embeddings().weight, embeddings)


@pytest.mark.skipif(not int8_supported(), reason="no torch quantized engine on this CPU/build (or fast paths off)")
def test_smoothing_shrinks_the_int8_error_on_outlier_channels():
    model = _llama(outliers=True)
    reference, ranges = _logits(model), _ranges(model)
    plain = _logits(quantize_decoder(copy.deepcopy(model), None))
    smoothed = _logits(quantize_decoder(copy.deepcopy(model), ranges))
    plain_error, smoothed_error = (plain - reference).abs().mean(), (smoothed - reference).abs().mean()
    assert smoothed_error < 0.5 * plain_error, (float(smoothed_error), float(plain_error))
    # and the MLP's down projection stays fp32 (radgen.models.int8.KEEP_FLOAT)
    quantized = quantize_decoder(copy.deepcopy(model), ranges)
    assert type(quantized.model.layers[0].mlp.down_proj) is torch.nn.Linear
    assert "quantized" in type(quantized.model.layers[0].mlp.up_proj).__module__


def test_ranges_of_another_decoder_are_refused_with_the_fix():
    model = _llama()
    ranges, before = _ranges(model), _logits(model)
    with pytest.raises(ValueError, match="calibrate-int8"):
        smooth_for_int8(model, {k: v for k, v in ranges.items() if k != "lm_head"})
    with pytest.raises(ValueError, match="calibrate-int8"):
        smooth_for_int8(model, {k: torch.ones(32) for k in ranges})
    # refused before any weight changed: the model still computes what it did
    assert torch.equal(_logits(model), before)


def test_other_decoder_families_are_not_smoothed():
    torch.manual_seed(0)
    gpt2 = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    before = _logits(gpt2)
    assert smooth_for_int8(gpt2, {}) == 0
    assert torch.equal(_logits(gpt2), before)
    with pytest.raises(ValueError, match="Llama-family"):
        record_activation_ranges(gpt2, lambda: gpt2(input_ids=IDS))


def test_ranges_round_trip_through_the_model_folder(tmp_path):
    ranges = _ranges(_llama())
    path = save_activation_ranges(ranges, tmp_path)
    assert path.name == ACTIVATION_RANGES_FILE and [p.name for p in tmp_path.iterdir()] == [ACTIVATION_RANGES_FILE]
    loaded = load_activation_ranges(tmp_path)
    assert sorted(loaded) == sorted(ranges) and all(torch.equal(loaded[k], ranges[k]) for k in ranges)
    assert load_activation_ranges(tmp_path / "elsewhere") is None and load_activation_ranges(None) is None


def test_a_damaged_ranges_file_is_named_with_the_fix(tmp_path):
    from safetensors.torch import save_file

    from radgen.errors import DataError

    path = tmp_path / ACTIVATION_RANGES_FILE
    path.write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(DataError, match=f"{path}: not readable as int8 activation ranges.*calibrate-int8"):
        load_activation_ranges(tmp_path)
    save_file({"lm_head": torch.ones(4, dtype=torch.int32)}, str(path))
    with pytest.raises(DataError, match="1-D float tensors.*calibrate-int8"):
        load_activation_ranges(tmp_path)


@pytest.mark.skipif(not int8_supported(), reason="no torch quantized engine on this CPU/build (or fast paths off)")
def test_quantizing_says_nothing_about_torchs_deprecated_api():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_decoder(_llama(), None)
    assert not [str(w.message) for w in caught if "torchao" in str(w.message) or "quantized tensor" in str(w.message)]
