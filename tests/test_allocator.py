"""radgen.allocator: large blocks stay in glibc's heap after `keep_large_blocks_in_heap`, and the
user's own malloc settings leave glibc alone (RADGEN_NO_CPU_FAST_PATHS: tests/models/test_fast_paths.py);
`release_free_heap` trims where glibc can and is a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform
import resource
import sys

import pytest
import torch

from radgen import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", [])
    calls = []
    monkeypatch.setattr(allocator, "_mallopt", lambda parameter, value: calls.append((parameter, value)) or True)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    return calls


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_sets_both_thresholds_once_per_process(fresh):
    assert allocator.keep_large_blocks_in_heap() and allocator.keep_large_blocks_in_heap()
    assert fresh == [(-3, allocator.MMAP_THRESHOLD), (-1, allocator.TRIM_THRESHOLD)]


@pytest.mark.parametrize("env", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"])
def test_the_users_own_malloc_settings_leave_glibc_alone(fresh, monkeypatch, env):
    monkeypatch.setenv(env, "1")
    assert allocator.keep_large_blocks_in_heap() is False and fresh == []


def test_not_glibc_changes_nothing(fresh, monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_large_blocks_in_heap() is False and fresh == []


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_a_freed_large_tensor_is_reused_without_page_faults(monkeypatch):
    # the real mallopt: after it, allocating and freeing a 48 MiB tensor again and again touches
    # pages the process already has. glibc's default maps and faults in its 12,288 pages each time
    # (48 MiB is above the 32 MiB its adaptive threshold can reach; measured: 245,780 faults for 20)
    monkeypatch.setattr(allocator, "_applied", [])
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert allocator.keep_large_blocks_in_heap()
    pages = 12 << 20 >> 10  # 12 Mi floats = 48 MiB = 12,288 pages of 4 KiB

    def faulted() -> bool:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(12 << 20).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before > pages // 2

    for _ in range(12):  # the heap settles (measured: 3-9 allocations fault their pages in first)
        faulted()
    faults = sum(faulted() for _ in range(20))
    assert faults <= 2, faults  # glibc's default: all 20


@pytest.fixture
def fresh_trim_lookup():
    allocator._malloc_trim.cache_clear()
    yield
    allocator._malloc_trim.cache_clear()


def test_without_malloc_trim_the_release_is_a_harmless_no_op(monkeypatch, fresh_trim_lookup):
    class NoTrim:  # a C library without malloc_trim (musl, macOS)
        pass

    monkeypatch.setattr(ctypes, "CDLL", lambda name: NoTrim())
    assert allocator._malloc_trim() is None
    assert allocator.release_free_heap() is False


def test_no_c_library_handle_is_a_harmless_no_op(monkeypatch, fresh_trim_lookup):
    def refuse(name):
        raise OSError("dlopen(NULL) is not supported here")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    assert allocator.release_free_heap() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_real_malloc_trim_runs_on_glibc(fresh_trim_lookup):
    if getattr(ctypes.CDLL(None), "malloc_trim", None) is None:
        pytest.skip("not glibc")
    assert allocator.release_free_heap() is True
