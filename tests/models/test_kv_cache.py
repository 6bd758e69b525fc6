"""The growing KV cache (radgen.models.kv_cache) holds and returns what transformers' concatenating cache does."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from radgen.models import kv_cache, speculative
from radgen.models.kv_cache import GrowingLayer, growing_cache
from tests.generate.fixtures import tiny_model

pytestmark = pytest.mark.skipif(GrowingLayer is None, reason="this transformers keeps its cache in lists (no cache layers)")


def _states(gen: torch.Generator, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, 2, width, 4, generator=gen), torch.randn(rows, 2, width, 4, generator=gen)


def _assert_same(growing, plain) -> None:
    for a, b in zip(growing.layers, plain.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert growing.get_seq_length() == plain.get_seq_length()


def test_updates_past_the_spare_room_return_what_concatenation_does():
    gen = torch.Generator().manual_seed(0)
    growing, plain = growing_cache(), DynamicCache()
    assert type(growing) is DynamicCache  # the lean forward and transformers take it as their own
    handed = []
    for width in (7, 1, 5, 17, 3, 40, 2):  # grows past its room several times (7 + 16 spare, then half again ...)
        for layer in (0, 1):
            states = _states(gen, 3, width)
            got, want = growing.update(*states, layer), plain.update(*states, layer)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            handed.append((got[0], want[0].clone()))
    _assert_same(growing, plain)
    assert isinstance(growing.layers[0], GrowingLayer)
    # no view handed out earlier was written to by a later update
    assert all(torch.equal(view, copy_) for view, copy_ in handed)
    # and it does grow into room: fewer buffers than updates
    assert growing.layers[0]._buffers[0].shape[-2] > growing.get_seq_length()


def test_crop_selection_and_copies_then_updates():
    gen = torch.Generator().manual_seed(1)
    growing, plain = growing_cache(), DynamicCache()
    for cache in (growing, plain):
        cache.update(*_states(torch.Generator().manual_seed(2), 4, 6), 0)
    before = growing.layers[0].keys
    kept = before.clone()
    copied = copy.deepcopy(growing)  # as drafted decoding keeps the prompts' part
    assert copied.layers[0].keys.is_contiguous() and copied.layers[0]._buffers is None
    for cache in (growing, plain):
        cache.crop(-2)
    states = _states(gen, 4, 3)
    growing.update(*states, 0)
    plain.update(*states, 0)
    _assert_same(growing, plain)
    assert torch.equal(before, kept)  # the crop's update did not write over the view handed out before it
    for cache in (growing, plain):
        cache.batch_select_indices(torch.tensor([3, 1]))
    _assert_same(growing, plain)
    states = _states(gen, 2, 5)
    growing.update(*states, 0)
    plain.update(*states, 0)
    _assert_same(growing, plain)
    # the copy is its own: the updates above left it as it was, and it grows on its own
    assert torch.equal(copied.layers[0].keys, kept)
    reference = DynamicCache()
    reference.update(copied.layers[0].keys.clone(), copied.layers[0].values.clone(), 0)
    more = _states(gen, 4, 2)
    copied.update(*more, 0)
    reference.update(*more, 0)
    _assert_same(copied, reference)


def test_drafted_decoding_writes_the_same_reports_as_with_concatenation(monkeypatch):
    model = tiny_model("radgen-small")
    fresh = copy.deepcopy(model)  # the draft table learns from each call's reports: both calls start from the same one
    findings = [["Cardiomegaly"], [], ["Pleural Effusion", "Atelectasis"]]
    pixels = torch.randn(3, 3, model.encoder.image_size, model.encoder.image_size, generator=torch.Generator().manual_seed(5))
    kwargs = dict(pixel_values=pixels, findings=findings, num_beams=1, max_new_tokens=20, draft_tokens=6)
    made = []

    def counted():
        made.append(1)
        return kv_cache.growing_cache()

    monkeypatch.setattr(speculative, "growing_cache", counted)
    growing = model.generate(**kwargs)
    assert made  # the drafted passes ran on a growing cache
    monkeypatch.setattr(speculative, "growing_cache", DynamicCache)
    plain = fresh.generate(**kwargs)
    for a, b in zip(growing, plain, strict=True):
        assert a.token_ids == b.token_ids and a.token_logprobs == b.token_logprobs
