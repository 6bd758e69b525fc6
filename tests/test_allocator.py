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


# In a fresh process: a thread allocates and frees a 96 MiB tensor again and again, and counts the
# times its pages were faulted in (more than half of them: a fresh mapping, not the heap's pages).
_THREAD_FAULTS = """
import resource, sys, threading, torch
from radgen import allocator
if sys.argv[1] == "one-heap":
    assert allocator.one_heap_for_all_threads()
assert allocator.keep_large_blocks_in_heap()
pages = 24 << 20 >> 10  # 24 Mi floats = 96 MiB: above the 64 MiB heap glibc gives a thread's own arena
counts = []
def work():
    def faulted():
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        torch.ones(24 << 20).sum()
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before > pages // 2
    for _ in range(6):  # the heap settles
        faulted()
    counts.append(sum(faulted() for _ in range(12)))
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(counts[0])
"""


def _faults_in_a_thread(mode: str) -> int:
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "RADGEN_NO_CPU_FAST_PATHS")}
    env["OMP_NUM_THREADS"] = "1"  # no OpenMP threads allocating before the test's own thread
    out = subprocess.run([sys.executable, "-c", _THREAD_FAULTS, mode], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC or not hasattr(resource, "RUSAGE_THREAD"), reason="glibc on Linux")
def test_a_worker_thread_reuses_large_blocks_only_on_the_main_heap():
    # glibc's default: the thread's own arena cannot hold 96 MiB, so every allocation is a fresh mapping
    assert _faults_in_a_thread("default") >= 10
    # on the main heap most come from the heap's own pages (measured 0-4 of 12 on a 2-core VM, the
    # most under a concurrent test; glibc's default faulted all 12 in every run)
    assert _faults_in_a_thread("one-heap") <= 8


def test_one_heap_respects_the_users_settings_and_the_fast_paths_switch(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "_mallopt", lambda parameter, value: calls.append((parameter, value)) or True)
    monkeypatch.setattr(allocator, "_glibc", lambda: True)
    for env, value in (("MALLOC_ARENA_MAX", "4"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2"), ("RADGEN_NO_CPU_FAST_PATHS", "1")):
        monkeypatch.setattr(allocator, "_one_heap", [])
        with monkeypatch.context() as scoped:
            for name in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "RADGEN_NO_CPU_FAST_PATHS"):
                scoped.delenv(name, raising=False)
            scoped.setenv(env, value)
            assert allocator.one_heap_for_all_threads() is False
    assert calls == []
    monkeypatch.setattr(allocator, "_one_heap", [])
    for name in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "RADGEN_NO_CPU_FAST_PATHS"):
        monkeypatch.delenv(name, raising=False)
    assert allocator.one_heap_for_all_threads() and allocator.one_heap_for_all_threads()  # once a process
    assert calls == [(-8, 1)]
    monkeypatch.setattr(allocator, "_one_heap", [])
    monkeypatch.setattr(allocator, "_glibc", lambda: False)
    assert allocator.one_heap_for_all_threads() is False and calls == [(-8, 1)]


@pytest.mark.parametrize("command, one_heap", [("serve", True), ("generate", True), ("demo", False), ("env", False)])
def test_the_commands_that_decode_off_the_main_thread_put_every_thread_on_one_heap_first(monkeypatch, command, one_heap):
    import argparse

    from radgen import cli

    seen = []
    monkeypatch.setattr(allocator, "one_heap_for_all_threads", lambda: seen.append("one heap") or True)

    def parser() -> argparse.ArgumentParser:
        built = argparse.ArgumentParser(prog="radgen")
        built.add_argument("-v", "--verbose", action="store_true")
        built.add_argument("--threads", type=int)
        sub = built.add_subparsers(dest="command")
        sub.add_parser(command).set_defaults(func=lambda args: seen.append(args.command) or 0)
        return built

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([command]) == 0
    assert seen == (["one heap", command] if one_heap else [command])
