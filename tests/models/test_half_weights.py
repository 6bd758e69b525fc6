"""fp16-weight Linears with fp32 arithmetic (radgen.models.half_weights): the products of fp16-rounded
weights, per row; the decoder's `float16` / `auto` form and its fallback where fbgemm cannot run."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from radgen.models import fast, half_weights
from radgen.models.fast import half_weights_supported
from radgen.models.half_weights import HalfWeightLinear
from radgen.models.lean_forward import FusedPart, LeanLlamaModel
from tests.generate.fixtures import tiny_model

needs_fbgemm = pytest.mark.skipif(not half_weights_supported(), reason="fbgemm's fp16 Linear does not run on this CPU/build")


def _rounded(linear: nn.Linear) -> nn.Linear:
    """The same Linear with its weight rounded to fp16 and kept in fp32: the independent reference."""
    twin = copy.deepcopy(linear)
    with torch.no_grad():
        twin.weight.copy_(twin.weight.half().float())
    return twin


@needs_fbgemm
@pytest.mark.parametrize("bias", [False, True])
def test_products_are_those_of_the_fp16_rounded_weights(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=bias).eval()
    half = HalfWeightLinear.from_linear(linear)
    reference = _rounded(linear)
    assert torch.equal(half.weight, reference.weight)  # what `weight` shows is what the products use
    assert not torch.equal(half.weight, linear.weight)  # and it is rounded
    for shape in ((1, 96), (13, 96), (3, 7, 96)):
        x = torch.randn(*shape)
        with torch.no_grad():
            got, want = half(x), reference(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-5)
        assert (got - linear(x).detach()).abs().max() > 0  # not fp32's products


@needs_fbgemm
def test_a_rows_result_does_not_depend_on_its_batch_mates_beyond_fp32_rounding():
    # int8's scales come from the whole call, so a row's words depended on its batch; here only the
    # summation order may change with the call's shape (last bits, as oneDNN's fp32 kernels)
    torch.manual_seed(1)
    half = HalfWeightLinear(torch.randn(64, 48) * 0.1)
    rows = torch.randn(40, 48)
    with torch.no_grad():
        together = half(rows)
        big = half(torch.cat([rows, 1e3 * torch.randn(24, 48)]))[:40]  # batch-mates of another scale change nothing
        for r in (0, 17, 39):
            assert torch.allclose(half(rows[r:r + 1])[0], together[r], atol=1e-6, rtol=1e-6)
        assert torch.allclose(big, together, atol=1e-6, rtol=1e-6)


@needs_fbgemm
def test_gradients_flow_through_the_rounded_weights():
    torch.manual_seed(2)
    linear = nn.Linear(16, 8)
    half, reference = HalfWeightLinear.from_linear(linear), _rounded(linear)
    x = torch.randn(3, 16, requires_grad=True)
    half(x).sum().backward()
    want = torch.autograd.grad(reference(x).sum(), x)[0]
    assert torch.allclose(x.grad, want, atol=1e-6)


@needs_fbgemm
def test_copies_state_and_moves():
    torch.manual_seed(3)
    half = HalfWeightLinear(torch.randn(8, 16), torch.randn(8))
    twin = copy.deepcopy(half)
    x = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(twin(x), half(x))
    state = half.state_dict()
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], half.weight)
    half.to("cpu")  # a no-op move is fine
    with pytest.raises(RuntimeError, match="fp16 weights for CPU inference"):
        half.to(torch.float64)


def test_the_probe_and_auto_respect_the_switch(monkeypatch):
    monkeypatch.setenv(fast.NO_FAST_PATHS_ENV, "1")
    assert not half_weights_supported()
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float32"
    model = tiny_model("radgen-small")
    assert fast.prepare_for_inference(model, "float16") == "float32"
    assert not any(type(m) is HalfWeightLinear for m in model.decoder.modules())


def test_auto_on_cpu_follows_the_cpus_abilities(monkeypatch):
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: False)
    monkeypatch.setattr(fast, "half_weights_supported", lambda: True)
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float16"
    monkeypatch.setattr(fast, "half_weights_supported", lambda: False)
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "float32"  # an aarch64 or pre-AVX2 CPU
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: True)
    assert fast.resolve_inference_dtype("auto", torch.device("cpu")) == "bfloat16"


def _pixels(model, batch: int = 3) -> torch.Tensor:
    size = model.encoder.image_size
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(5))


@needs_fbgemm
def test_float16_decodes_what_the_fp16_rounded_fp32_model_decodes():
    reference = tiny_model("radgen-small")
    model = copy.deepcopy(reference)
    assert fast.prepare_for_inference(model, "float16") == "float16"
    assert fast.decoder_precision(model.decoder) == "float16"
    body = fast.base_model(model.decoder).get_decoder()
    assert type(body) is LeanLlamaModel
    attention = body.layers[0].self_attn
    assert type(attention.q_proj) is FusedPart and type(attention.q_proj.fused) is HalfWeightLinear
    assert type(attention.o_proj) is HalfWeightLinear and type(body.layers[0].mlp.down_proj) is HalfWeightLinear
    assert type(fast.base_model(model.decoder).get_output_embeddings()) in (nn.Linear, fast.PackedLinear)  # the head stays fp32
    # the independent reference: the same model, its body's Linear weights rounded to fp16, fp32 arithmetic, no fast paths
    reference.merge_adapters()
    with torch.no_grad():
        for layer in fast.base_model(reference.decoder).get_decoder().layers:
            for linear in layer.modules():
                if type(linear) is nn.Linear:
                    linear.weight.copy_(linear.weight.half().float())
    findings = [["Cardiomegaly"], [], ["Pleural Effusion", "Atelectasis", "Edema"]]
    pixels = _pixels(model)
    for draft_tokens in (0, 6):  # HF greedy and drafted greedy
        kwargs = dict(pixel_values=pixels, findings=findings, num_beams=1, max_new_tokens=16, draft_tokens=draft_tokens)
        for a, b in zip(reference.generate(**kwargs), model.generate(**kwargs)):
            assert b.token_ids == a.token_ids
            assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=1e-4)


def test_float16_falls_back_to_float32_with_a_note_where_fbgemm_cannot_run(monkeypatch, caplog):
    monkeypatch.setattr(fast, "half_weights_supported", lambda: False)
    fast._note_once.cache_clear()
    reference = tiny_model("radgen-small")
    model = copy.deepcopy(reference)
    with caplog.at_level(logging.INFO, logger="radgen.models.fast"):
        assert fast.prepare_for_inference(model, "float16") == "float32"
    assert "fp16 decoder weights need fbgemm" in caplog.text and "decoding in float32 instead" in caplog.text
    assert not any(type(m) is HalfWeightLinear for m in model.decoder.modules())
    assert fast.decoder_precision(model.decoder) == "float32"
    kwargs = dict(pixel_values=_pixels(model), num_beams=1, max_new_tokens=12)
    for a, b in zip(reference.generate(**kwargs), model.generate(**kwargs)):
        assert b.token_ids == a.token_ids


def test_the_probe_says_no_without_the_ops(monkeypatch):
    half_weights._probe.cache_clear()
    monkeypatch.setattr(half_weights, "_ops", lambda: None)
    try:
        assert not half_weights._probe()
    finally:
        half_weights._probe.cache_clear()


@needs_fbgemm
def test_lean_forward_off_still_gets_fp16_weights(monkeypatch):
    monkeypatch.setenv(fast.LEAN_ENV, "0")
    model = tiny_model("radgen-small")
    assert fast.prepare_for_inference(model, "float16") == "float16"
    body = fast.base_model(model.decoder).get_decoder()
    assert type(body) is not LeanLlamaModel
    assert type(body.layers[0].self_attn.q_proj) is HalfWeightLinear  # unfused, each its own
    with torch.no_grad():
        assert len(model.generate(pixel_values=_pixels(model, 2), num_beams=1, max_new_tokens=8)) == 2
