"""The serving process gives freed heap pages back after each batch (radgen.serve.inference.release_free_heap)."""

from __future__ import annotations

import ctypes
import sys

import pytest

from radgen.serve import inference
from tests.serve.tiny_model import png_bytes, radiograph


@pytest.fixture(autouse=True)
def _fresh_lookup():
    inference._malloc_trim.cache_clear()
    yield
    inference._malloc_trim.cache_clear()


def test_trim_is_called_after_every_batch_even_a_failing_one(service, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(inference, "_malloc_trim", lambda: lambda pad: calls.append(pad) or 1)
    results = service.run_batch([service.prepare(png_bytes()), service.prepare(png_bytes(radiograph(seed=1)))])
    assert len(results) == 2 and all("sentences" in r for r in results)
    assert calls == [0]

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(service.model, "generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        service.run_batch([service.prepare(png_bytes())])
    assert calls == [0, 0]


def test_without_malloc_trim_the_release_is_a_harmless_no_op(monkeypatch):
    class NoTrim:  # a C library without malloc_trim (musl, macOS)
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoTrim())
    assert inference._malloc_trim() is None
    assert inference.release_free_heap() is False


def test_no_c_library_handle_is_a_harmless_no_op(monkeypatch):
    def refuse(name):
        raise OSError("dlopen(NULL) is not supported here")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    assert inference.release_free_heap() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_real_malloc_trim_runs_on_glibc():
    if getattr(ctypes.CDLL(None), "malloc_trim", None) is None:
        pytest.skip("not glibc")
    assert inference.release_free_heap() is True
