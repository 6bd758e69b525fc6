"""Numerics of the fast paths (radgen.models.fast): they must compute what the plain paths compute."""

from __future__ import annotations

import copy

import pytest
import torch

from radgen.config import load_recipe
from radgen.models import build_model
from radgen.models.fast import label_position_logprobs, label_position_loss, prepare_for_inference, supports_label_position_loss

REPORTS = ["the heart size is normal . the lungs are clear .", "small left pleural effusion .",
           "no acute cardiopulmonary abnormality . the osseous structures are intact . stable appearance of the chest ."]


def _tiny(recipe: str):
    torch.manual_seed(0)
    return build_model(load_recipe(recipe, size="tiny"))


@pytest.mark.parametrize("recipe", ["radgen-small", "blip2-opt-lora"])
def test_label_position_loss_equals_hf_loss_and_grads(recipe):
    model = _tiny(recipe)
    assert supports_label_position_loss(model.decoder)
    model.train()  # dropout on: both paths must draw the same masks in the same order
    size = model.image_transform.size
    pixels = torch.randn(len(REPORTS), 3, size, size)
    tokens = model.tokenize_reports(REPORTS)
    results = []
    for loss_only in (False, True):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = model(**tokens, pixel_values=pixels, loss_only=loss_only)
        out.loss.backward()
        # the finding head trains only from finding_targets (none here): its own test is tests/models/test_findings.py
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and not n.startswith("findings.")}
        results.append((out.loss.detach(), grads, out.logits))
    (plain, plain_grads, plain_logits), (fast, fast_grads, fast_logits) = results
    assert plain_logits is not None and fast_logits is None
    assert torch.allclose(plain, fast, atol=1e-5, rtol=0), (plain, fast)
    assert plain_grads.keys() == fast_grads.keys() and plain_grads
    for name in plain_grads:
        assert torch.allclose(plain_grads[name], fast_grads[name], atol=1e-5, rtol=1e-4), name


def test_label_position_loss_chunks_and_ignores_masked_rows():
    model = _tiny("radgen-small").eval()
    decoder = model.decoder
    embeds = torch.randn(2, 9, decoder.get_input_embeddings().embedding_dim)
    mask = torch.ones(2, 9, dtype=torch.long)
    labels = torch.full((2, 9), -100)
    labels[0, 4:8] = torch.tensor([5, 6, 7, 8])
    labels[1, 2:4] = torch.tensor([9, 10])
    with torch.no_grad():
        reference = decoder(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        one_row_chunks = label_position_loss(decoder, embeds, mask, labels, chunk=1)
        whole = label_position_loss(decoder, embeds, mask, labels)
        # independent reference: mean of -log p(label) over the 6 label positions, from the full logits
        logits = decoder(inputs_embeds=embeds, attention_mask=mask).logits.float()
        logp = logits.log_softmax(-1)
        picks = [logp[0, t - 1, labels[0, t]] for t in range(4, 8)] + [logp[1, t - 1, labels[1, t]] for t in range(2, 4)]
        by_hand = -torch.stack(picks).mean()
    for value in (reference, one_row_chunks, whole):
        assert torch.allclose(value, by_hand, atol=1e-5), (value, by_hand)


def test_label_position_logprobs_are_the_full_logits_log_softmax_at_label_positions():
    model = _tiny("radgen-small").eval()
    decoder = model.decoder
    embeds = torch.randn(2, 9, decoder.get_input_embeddings().embedding_dim)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0  # a right-padded row
    labels = torch.full((2, 9), -100)
    labels[0, 4:8] = torch.tensor([5, 6, 7, 8])
    labels[1, 2:5] = torch.tensor([9, 10, 11])
    with torch.no_grad():
        logp = decoder(inputs_embeds=embeds, attention_mask=mask).logits.float().log_softmax(-1)
    expected = [[float(logp[0, t - 1, labels[0, t]]) for t in range(4, 8)], [float(logp[1, t - 1, labels[1, t]]) for t in range(2, 5)]]
    for chunk in (1, 1024):
        got = label_position_logprobs(decoder, embeds, mask, labels, chunk=chunk)
        assert [len(row) for row in got] == [4, 3]
        torch.testing.assert_close(torch.tensor(got[0] + got[1]), torch.tensor(expected[0] + expected[1]), atol=1e-5, rtol=1e-5)


def test_token_logprobs_in_row_chunks_equal_one_log_softmax_and_a_float64_reference():
    from radgen.models import fast

    torch.manual_seed(0)
    rows = 3 * fast.LOGPROB_ROWS_CPU + 5  # several whole chunks and a partial one
    logits = (torch.randn(rows, 301) * 4).to(torch.bfloat16)
    tokens = torch.randint(0, 301, (rows,))
    got = fast.token_logprobs(logits, tokens)
    whole = logits.float().log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)  # one pass, as before the chunks
    exact = logits.double()
    reference = exact[torch.arange(rows), tokens] - exact.logsumexp(-1)
    assert got.dtype == torch.float32 and got.shape == (rows,)
    assert torch.equal(got, whole)
    torch.testing.assert_close(got.double(), reference, atol=1e-5, rtol=1e-6)


def test_bf16_inference_keeps_greedy_choices_with_a_clear_margin():
    model = _tiny("radgen-small").eval()
    size = model.image_transform.size
    pixels = torch.randn(4, 3, size, size)
    tokens = model.tokenize_reports(REPORTS + ["mild cardiomegaly ."])
    fast = copy.deepcopy(model)
    assert prepare_for_inference(fast, "bfloat16") == "bfloat16"
    assert next(fast.decoder.parameters()).dtype == torch.bfloat16
    model.merge_adapters()
    with torch.no_grad():
        ref = model(**tokens, pixel_values=pixels).logits.float()
        got = fast(**tokens, pixel_values=pixels).logits.float()
    # real positions only (visual tokens, then the text's unpadded tokens): a padded position's output is
    # never read, and at inference padding skips the MLPs (radgen.models.padding_free)
    before = ref.shape[1] - tokens["attention_mask"].shape[1]
    real = torch.cat([torch.ones(ref.shape[0], before, dtype=torch.bool), tokens["attention_mask"].bool()], dim=1)
    ref, got = ref[real], got[real]
    top2 = ref.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 0.05 * ref.abs().amax()  # positions where fp32's choice is not a near-tie
    assert clear.sum() > 20
    assert torch.equal(ref.argmax(-1)[clear], got.argmax(-1)[clear])
    assert (ref - got).abs().max() < 0.05 * ref.abs().amax()
    reports = fast.generate(pixel_values=pixels, num_beams=1, max_new_tokens=5)
    assert len(reports) == 4 and all(len(r.token_logprobs) == len(r.token_ids) for r in reports)


def test_int8_inference_quantises_decoder_linears_and_generates():
    from radgen.models.fast import int8_supported

    model = _tiny("radgen-small").eval()
    if not int8_supported():  # no quantized engine (or fast paths off): the fp32 fallback, tested below
        assert prepare_for_inference(model, "int8") == "float32"
        return
    assert prepare_for_inference(model, "int8") == "int8"
    quantised = [m for m in model.decoder.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert quantised
    size = model.image_transform.size
    reports = model.generate(pixel_values=torch.randn(2, 3, size, size), num_beams=2, max_new_tokens=4)
    assert len(reports) == 2


def test_prepare_for_inference_rejects_unknown_dtype():
    from radgen.errors import ConfigError

    with pytest.raises(ConfigError, match="float8"):
        prepare_for_inference(_tiny("radgen-small"), "float8")


def test_inference_puts_the_cnn_encoder_in_channels_last_with_equal_features():
    model = _tiny("radgen-small").eval()
    size = model.image_transform.size
    pixels = torch.randn(3, 3, size, size)
    with torch.no_grad():
        before = model.encoder(pixels)
    prepare_for_inference(model, "float32")
    conv = next(p for p in model.encoder.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.no_grad():
        after = model.encoder(pixels)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype, rows_hint", [(torch.float32, None), (torch.float32, 1), (torch.float32, 64), (torch.bfloat16, None)])
def test_packed_linear_computes_what_linear_computes_and_copies_and_saves(dtype, rows_hint):
    from radgen.models.fast import packing_supported

    if not packing_supported(dtype):  # bf16 packing needs AVX-512 or AVX-NE-CONVERT; the fallback is tested below
        pytest.skip(f"this CPU cannot pack {dtype} weights for oneDNN")
    from radgen.models.fast import PackedLinear
    from radgen.models.packed_linear import PACK_ROWS_HINT

    torch.manual_seed(0)
    linear = torch.nn.Linear(24, 40).to(dtype)
    packed = PackedLinear(linear, rows_hint)  # the layout for that many rows; any number multiplies correctly
    assert packed.rows_hint == (PACK_ROWS_HINT if rows_hint is None else rows_hint)
    x = torch.randn(3, 5, 24).to(dtype)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), **tolerance)
        torch.testing.assert_close(packed(x[0, :1]), linear(x[0, :1]), **tolerance)  # batch 1, 2-D
    assert torch.equal(packed.state_dict()["weight"], linear.weight.detach())
    assert torch.equal(packed.state_dict()["bias"], linear.bias.detach())
    twin = copy.deepcopy(packed)
    assert twin.rows_hint == packed.rows_hint
    with torch.no_grad():
        assert torch.equal(twin(x), packed(x))


def test_inference_packs_the_decoder_and_keeps_greedy_reports(monkeypatch):
    from radgen.models import fast

    monkeypatch.setenv(fast.PACK_ENV, "1")  # pack whatever this CPU's timing says (packing_pays: next test)
    model = _tiny("radgen-small").eval()
    size = model.image_transform.size
    pixels = torch.randn(3, 3, size, size)
    plain = copy.deepcopy(model)
    plain.merge_adapters()
    prepare_for_inference(model, "float32")
    from radgen.models.fast import PackedLinear, packing_supported

    if packing_supported(torch.float32):  # else (a CPU that cannot pack, or fast paths off) the layers stay plain
        assert any(isinstance(m, PackedLinear) for m in model.decoder.modules())
        assert not any(type(m) is torch.nn.Linear for m in model.decoder.modules())
    from radgen.models.attention import GROUPED_SDPA

    assert fast.base_model(model.decoder).config._attn_implementation == GROUPED_SDPA  # and the plain model's stays SDPA
    assert fast.base_model(plain.decoder).config._attn_implementation == "sdpa"
    want = plain.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8)
    got = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert max(abs(a - b) for x, y in zip(got, want) for a, b in zip(x.token_logprobs, y.token_logprobs)) < 1e-4


def test_packed_linear_passes_gradients_to_its_input():
    from radgen.models.fast import PackedLinear, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN")
    linear = torch.nn.Linear(6, 4)
    x = torch.randn(2, 6, requires_grad=True)
    PackedLinear(linear)(x).sum().backward()
    torch.testing.assert_close(x.grad, linear.weight.detach().sum(0).expand(2, 6))


def test_packed_linear_refuses_to_move_or_change_dtype():
    from radgen.models.fast import PackedLinear, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN")
    packed = PackedLinear(torch.nn.Linear(4, 3))
    packed.to("cpu").float()  # same device and dtype: fine
    with pytest.raises(RuntimeError, match="packed for CPU inference"):
        packed.to(torch.bfloat16)


def test_min_new_tokens_decodes_a_fixed_length():
    model = _tiny("radgen-small").eval()
    size = model.image_transform.size
    pixels = torch.randn(2, 3, size, size)
    eos = model.eos_id()
    bias = torch.zeros(model.decoder.config.vocab_size)
    bias[eos] = 1e4  # eos is always the argmax: without min_new_tokens every report is empty
    head = model.decoder.get_output_embeddings()
    head.bias = torch.nn.Parameter(bias)
    assert all(not r.token_ids for r in model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6))
    reports = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6, min_new_tokens=6)
    assert all(len(r.token_logprobs) == 6 for r in reports)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_without_cpu_fast_paths_inference_falls_back_to_plain_layers_and_same_reports(dtype, monkeypatch, caplog):
    """The branch an AVX2-only (or non-x86) CPU takes: no packed or quantized layer, a one-line note,
    and the greedy reports of the plain merged model (fp32, int8 fallback) or a working bf16 decoder."""
    import logging

    from radgen.models import fast

    reference = _tiny("radgen-small").eval()
    model = copy.deepcopy(reference)
    monkeypatch.setenv(fast.NO_FAST_PATHS_ENV, "1")
    fast._note_once.cache_clear()
    heap = []  # glibc's thresholds (radgen.allocator) are a fast path too
    monkeypatch.setattr(fast, "keep_large_blocks_in_heap", lambda: heap.append(1))
    with caplog.at_level(logging.INFO, logger="radgen.models.fast"):
        chosen = fast.prepare_for_inference(model, dtype)
    assert chosen == ("float32" if dtype == "int8" else dtype) and heap == []
    monkeypatch.delenv(fast.NO_FAST_PATHS_ENV)
    fast.prepare_for_inference(copy.deepcopy(reference), "float32")
    assert heap == [1]
    assert not any(isinstance(m, fast.PackedLinear) or "quantized" in type(m).__module__ for m in model.decoder.modules())
    notes = [r.getMessage() for r in caplog.records]
    assert notes and all("\n" not in note for note in notes), notes
    assert any(("int8" in n) if dtype == "int8" else ("packing" in n and dtype in n) for n in notes), notes
    size = model.image_transform.size
    pixels = torch.randn(2, 3, size, size)
    got = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6)
    assert len(got) == 2 and all(len(r.token_logprobs) == len(r.token_ids) for r in got)
    if dtype != "bfloat16":
        reference.merge_adapters()
        want = reference.generate(pixel_values=pixels, num_beams=1, max_new_tokens=6)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]


def test_packing_probe_refuses_a_dtype_the_cpu_cannot_pack(monkeypatch):
    """A failing oneDNN reorder (what an AVX2 CPU raises for bf16) makes packing unsupported, not an error."""
    from radgen.models import fast

    def refuse(weight, batch):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw")

    fast._packing_probe.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse, raising=False)
    try:
        assert fast._packing_probe(torch.bfloat16) is False
        layer = torch.nn.Sequential(torch.nn.Linear(4, 3).to(torch.bfloat16))
        if fast.packing_available():
            assert fast.pack_linears(layer) == 0 and type(layer[0]) is torch.nn.Linear
    finally:
        fast._packing_probe.cache_clear()


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as handle:
        return {line.split(maxsplit=5)[5].strip() for line in handle if len(line.split(maxsplit=5)) == 6}


def test_packing_closes_the_memory_mapped_checkpoint_and_keeps_outputs(tmp_path):
    """After packing, nothing may hold the checkpoint's file mapping: the fp32 weights the packing read
    would otherwise stay resident next to their packed copies (+513 MB for radgen-small's decoder)."""
    import gc
    import os

    from transformers import AutoModelForCausalLM, LlamaConfig

    from radgen.models.fast import PackedLinear, pack_linears, packing_supported

    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs Linux /proc to see file mappings")
    if not packing_supported(torch.float32):
        pytest.skip("this torch build or CPU cannot pack fp32 weights for oneDNN")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    checkpoint = str((tmp_path / "model.safetensors").resolve())
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    if checkpoint not in _mapped_files():
        pytest.skip("this transformers/safetensors version copies checkpoints instead of mapping them")
    ids = torch.tensor([[1, 5, 9, 33, 200, 7]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    embedding = model.get_input_embeddings().weight
    assert pack_linears(model) > 0
    gc.collect()
    assert checkpoint not in _mapped_files()
    assert isinstance(model.get_output_embeddings(), PackedLinear)
    assert model.get_input_embeddings().weight is embedding  # same Parameter object, now owning its memory
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


def test_own_weights_keeps_values_sharing_and_memory_format():
    from radgen.models.fast import own_weights

    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    shared = torch.nn.Linear(4, 4)
    model = torch.nn.ModuleDict({"conv": conv, "a": shared, "b": shared, "norm": torch.nn.BatchNorm2d(8)})
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    pointers = {name: tensor.data_ptr() for name, tensor in model.state_dict().items()}
    copied = own_weights(model)
    after = model.state_dict()
    expected_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert copied == expected_bytes  # the shared Linear counted once
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name
        assert tensor.data_ptr() != pointers[name], f"{name} still uses its old memory"
    assert model["a"].weight is model["b"].weight
    assert model["conv"].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("packed_ms,plain_ms,expected", [(2.0, 4.0, True), (3.9, 4.0, False), (6.0, 4.0, False)])
def test_packing_is_kept_only_where_this_cpu_runs_it_faster(packed_ms, plain_ms, expected, monkeypatch, caplog):
    """Packing won 1.29x on one CPU and lost 0.64x on another: the timing decides, with a 5% margin,
    and RADGEN_PACK_LINEARS=0/1 overrides it without timing."""
    import logging

    from radgen.models import fast

    if not fast.packing_supported(torch.float32):
        pytest.skip("this torch build or CPU cannot pack fp32 weights for oneDNN")
    timed = []
    monkeypatch.delenv(fast.PACK_ENV, raising=False)
    monkeypatch.setattr(fast, "_packing_timing", lambda *shape, **how: timed.append(shape) or (packed_ms / 1e3, plain_ms / 1e3))
    fast._note_once.cache_clear()
    model = _tiny("radgen-small").eval()
    with caplog.at_level(logging.DEBUG, logger="radgen.models.fast"):
        fast.prepare_for_inference(model, "float32")
    assert any(isinstance(m, fast.PackedLinear) for m in model.decoder.modules()) is expected
    vocabulary = model.decoder.get_output_embeddings().out_features
    assert all(shape[2] == torch.float32 for shape in timed)
    assert timed[0][0] != vocabulary and timed[1][0] == vocabulary  # the blocks, then the LM head
    # then the fused q/k/v and gate/up shapes of the lean forward (radgen.models.lean_forward), each on its own
    config = model.decoder.config
    head_dim = config.hidden_size // config.num_attention_heads
    fused = {(head_dim * (config.num_attention_heads + 2 * config.num_key_value_heads), config.hidden_size),
             (2 * config.intermediate_size, config.hidden_size)}
    assert {shape[:2] for shape in timed[2:]} == fused
    for part in ("decoder blocks", "LM head", "fused projections"):
        assert any(f"packing {'on' if expected else 'off'} for this CPU's {part}" in r.getMessage() for r in caplog.records)
    timings = len(timed)
    for forced, packs in (("0", False), ("1", True)):
        monkeypatch.setenv(fast.PACK_ENV, forced)
        model = _tiny("radgen-small").eval()
        fast.prepare_for_inference(model, "float32")
        assert any(isinstance(m, fast.PackedLinear) for m in model.decoder.modules()) is packs
    assert len(timed) == timings  # forced: no timing


@pytest.mark.parametrize("blocks_pay,head_pays", [(False, True), (True, False)])
def test_the_lm_head_and_the_blocks_are_packed_on_their_own_timings(blocks_pay, head_pays, monkeypatch):
    """On an AVX2 Zen 3 the block shapes timed within a few percent either way while the LM head ran
    1.5-1.75x faster packed: one decision for both left the head unpacked whenever the blocks lost."""
    from radgen.models import fast

    if not fast.packing_supported(torch.float32):
        pytest.skip("this torch build or CPU cannot pack fp32 weights for oneDNN")
    monkeypatch.delenv(fast.PACK_ENV, raising=False)
    model = _tiny("radgen-small").eval()
    vocabulary = model.decoder.get_output_embeddings().out_features
    pays = {True: (1e-3, 4e-3), False: (4e-3, 4e-3)}
    monkeypatch.setattr(fast, "_packing_timing", lambda out, *rest, **how: pays[head_pays if out == vocabulary else blocks_pay])
    size = model.image_transform.size
    pixels = torch.randn(2, 3, size, size)
    plain = copy.deepcopy(model)
    plain.merge_adapters()
    prepare_for_inference(model, "float32")
    head = fast.base_model(model.decoder).get_output_embeddings()
    blocks = [m for name, m in model.decoder.named_modules() if ".layers." in f".{name}" and isinstance(m, (torch.nn.Linear, fast.PackedLinear))]
    assert isinstance(head, fast.PackedLinear) is head_pays
    assert blocks and all(isinstance(m, fast.PackedLinear) is blocks_pay for m in blocks)
    with torch.no_grad():  # packed or not, the same greedy reports
        ours = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8)
        theirs = plain.generate(pixel_values=pixels, num_beams=1, max_new_tokens=8)
    assert [r.text for r in ours] == [r.text for r in theirs]


@pytest.mark.parametrize("capabilities, expected", [
    ({"avx512_bf16": True, "amx_bf16": False}, "bfloat16"),
    ({"amx_bf16": True}, "bfloat16"),
    ({"avx512": True, "avx2": True, "avx512_bf16": False}, "float32"),  # AVX-512 without BF16: emulated, slower
    ({"avx2": True}, "float32"),
    ({"neon": True, "bf16": True}, "float32"),  # ARM's bf16: not measured, so fp32
])
def test_auto_dtype_on_cpu_is_bf16_only_where_the_cpu_computes_it(capabilities, expected, monkeypatch, caplog):
    from radgen.models import fast

    monkeypatch.delenv(fast.NO_FAST_PATHS_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    # the bf16 decision alone: where bf16 loses, fp16 weights are the next choice (tests/models/test_half_weights.py)
    monkeypatch.setattr(fast, "half_weights_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(capabilities))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # torch's kernels not capped
    with caplog.at_level("DEBUG", logger="radgen.models.fast"):
        assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == expected
    assert ("computes bf16 natively" in caplog.text) == (expected == "bfloat16")
    # an explicit dtype is never second-guessed
    assert fast.resolve_inference_dtype("float32", torch.device("cpu")) == "float32"
    model = _tiny("radgen-small")
    assert prepare_for_inference(model, "auto") == expected
    assert next(model.decoder.parameters()).dtype == getattr(torch, expected)


@pytest.mark.parametrize("kernels, onednn_isa, expected", [
    ("AVX512", "", "bfloat16"), ("AVX512", "AVX512_CORE_BF16", "bfloat16"), ("AVX512", "AVX512_CORE_AMX", "bfloat16"),
    ("AVX2", "", "float32"),  # ATEN_CPU_CAPABILITY=avx2
    ("AVX512", "AVX2", "float32"), ("AVX512", "avx512_core_vnni", "float32"),  # ONEDNN_MAX_CPU_ISA below bf16
])
def test_auto_dtype_is_fp32_where_torch_or_onednn_are_capped_below_the_cpus_bf16(kernels, onednn_isa, expected, monkeypatch):
    from radgen.models import fast

    monkeypatch.delenv(fast.NO_FAST_PATHS_ENV, raising=False)
    monkeypatch.setattr(fast, "half_weights_supported", lambda: False)  # the bf16 decision alone
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "avx2": True})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: kernels)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_isa)
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == expected


def test_auto_dtype_on_cpu_is_fp32_with_fast_paths_off_or_when_torch_cannot_tell(monkeypatch):
    from radgen.models import fast

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": True})
    monkeypatch.setenv(fast.NO_FAST_PATHS_ENV, "1")
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float32"
    monkeypatch.delenv(fast.NO_FAST_PATHS_ENV)
    monkeypatch.setattr(fast, "half_weights_supported", lambda: False)  # the bf16 decision alone

    def unreadable() -> dict:
        raise RuntimeError("cpuinfo failed")

    monkeypatch.setattr(torch.cpu, "get_capabilities", unreadable)
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float32"
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float32"


class _NormFirst(torch.nn.Module):
    """A conv registered before its batch norm but run after it: folding by registration order would be wrong."""

    image_size = 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(3)
        self.norm.running_mean.fill_(2.0)

    def forward(self, pixels):
        return self.conv(self.norm(pixels))


def test_batch_norms_are_folded_only_where_the_outputs_stay_the_same(caplog):
    from types import SimpleNamespace

    from radgen.models.fast import _fold_encoder_batch_norms, fold_batch_norms

    model = SimpleNamespace(encoder=_NormFirst().eval())
    probe = torch.randn(2, 3, 8, 8)
    before = model.encoder(probe)
    with caplog.at_level("INFO"):
        assert _fold_encoder_batch_norms(model) == 0
    assert isinstance(model.encoder.norm, torch.nn.BatchNorm2d)  # put back as it was
    torch.testing.assert_close(model.encoder(probe), before)
    assert "kept them unfolded" in caplog.text
    training = _NormFirst().train()
    assert fold_batch_norms(training) == 0  # batch statistics in training: nothing to fold


def test_preparing_gives_the_replaced_weights_back_to_the_system_once_they_are_gone(monkeypatch):
    """The fp32 Linear weights that int8 (or packing, or fp16 weights) replace are freed into glibc's
    heap, which radgen's trim threshold keeps resident: prepare_for_inference trims it once, after
    the swap, so an idle model does not hold them (radgen.allocator.release_free_heap)."""
    from radgen.models import fast

    if not fast.int8_supported():
        pytest.skip("no torch quantized engine on this CPU/build")
    model = _tiny("radgen-small").eval()
    trims = []
    monkeypatch.setattr(fast, "release_free_heap", lambda: trims.append(fast.decoder_precision(model.decoder)) or True)
    assert fast.prepare_for_inference(model, "int8") == "int8"
    assert trims == ["int8"]
