"""`ReportGenerator.generate` decodes in eval mode and leaves every module's mode as it found it."""

from __future__ import annotations

import copy

import pytest
import torch

from radgen.models.fast import packing_supported

from tests.generate.fixtures import tiny_model


def _modes(model) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def test_generate_runs_in_eval_mode_and_restores_each_modules_mode():
    model = tiny_model()
    model.train()
    model.connector.eval()  # a mixed state: generate must put back exactly this, not model.train()'s rules
    before = _modes(model)
    assert any(before.values()) and not all(before.values())
    seen = []
    model.connector.register_forward_pre_hook(lambda module, args: seen.append(any(m.training for m in model.modules())))
    model.generate(pixel_values=torch.rand(1, 3, 64, 64), num_beams=1, max_new_tokens=3)
    assert seen and not any(seen)  # no dropout, no batch-norm updates while decoding
    assert _modes(model) == before


def test_generate_on_an_eval_model_switches_no_module(monkeypatch):
    model = tiny_model()  # eval mode, as every inference caller keeps it
    calls = []
    monkeypatch.setattr(type(model), "train", lambda self, mode=True: calls.append(mode) or self)
    model.generate(pixel_values=torch.rand(1, 3, 64, 64), num_beams=1, max_new_tokens=3)
    assert calls == [] and not any(_modes(model).values())


def test_a_model_prepared_for_inference_has_no_module_left_in_training_mode():
    # packed and fused layers are new modules: made in training mode, each generate call would switch
    # every module of the model to eval and back
    from radgen.models.fast import PACK_ENV, prepare_for_inference

    model = tiny_model()
    assert not any(m.training for m in model.modules())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PACK_ENV, "1")  # packed and fused whatever the load-time timing would say
        prepare_for_inference(model, dtype="float32")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"PackedLinear", "FusedPart"} <= kinds or not packing_supported(torch.float32)
    assert [name for name, m in model.named_modules() if m.training] == []
    model.train()
    for module in model.modules():  # every module in training mode, the packed ones included
        module.training = True
    assert _modes(copy.deepcopy(model)) == _modes(model)  # a copy keeps each module's mode
