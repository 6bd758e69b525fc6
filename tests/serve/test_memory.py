"""The serving process gives freed heap pages back after each batch (radgen.allocator.release_free_heap)."""

from __future__ import annotations

import pytest

from radgen import allocator
from tests.serve.tiny_model import png_bytes, radiograph


@pytest.fixture(autouse=True)
def _fresh_lookup():
    allocator._malloc_trim.cache_clear()
    yield
    allocator._malloc_trim.cache_clear()


def test_trim_is_called_after_every_batch_even_a_failing_one(service, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(allocator, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    results = service.run_batch([service.prepare(png_bytes()), service.prepare(png_bytes(radiograph(seed=1)))])
    assert len(results) == 2 and all("sentences" in r for r in results)
    assert calls == [0]

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(service.model, "generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        service.run_batch([service.prepare(png_bytes())])
    assert calls == [0, 0]
