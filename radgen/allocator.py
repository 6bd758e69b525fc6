"""Keep large CPU tensors in the heap between decoder passes (glibc's malloc only).

Why: glibc hands out every allocation above its mmap threshold (128 KiB at start, adapting up to
32 MiB as such blocks are freed) as fresh pages from the kernel and returns them on free, so the
next pass pays a page fault per 4 KiB touched again. A decoder pass at batch 32 allocates and
frees hundreds of 1-100 MiB tensors (the MLP's products, a re-scored batch's logits). With the
threshold at 256 MiB (and freed memory kept up to 512 MiB) they are reused from the heap: on the
project's 2-core machine, 96 studies at batch 32 took 85% fewer page faults and 5.6% less time in
bf16 (3 interleaved pairs, every pair faster), the same time in fp32 on AVX2 kernels, peak memory
within +/-60 MiB (benchmarks/allocator_heap.py; docs/benchmarks.md, Performance). PyTorch's CPU
tuning guide recommends jemalloc or tcmalloc for the same reason; `mallopt` needs no preloaded
library.

Applied once per process by `radgen.models.fast.prepare_for_inference` on CPU (not with
RADGEN_NO_CPU_FAST_PATHS=1); nothing happens where the C library is not glibc or where the user
set glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_.

The other side of keeping freed memory: `release_free_heap` gives the heap's free pages back
(glibc's malloc_trim) where a process knows it has just freed much that it will not reuse soon: after
`prepare_for_inference` replaced the decoder's Linear weights (packed, fp16 or int8 copies), and
after each server batch (`radgen.serve.inference`).

Threads: glibc gives each thread that allocates its own arena (up to 8 per core), and caps an
arena's heap at 64 MiB, so in any thread but the main one a larger block (a batch's convolution
maps at 320 px, the LM head's logits over many rows) is mapped fresh and faulted in at every
allocation, whatever the threshold above. `radgen serve` decodes on a worker thread and
`radgen generate` two batches at once on two lane threads (`radgen.generate.lanes`), so those two
commands call `one_heap_for_all_threads` (glibc's M_ARENA_MAX=1) before any thread allocates.
Measured on a 2-core AVX2-only EPYC VM (docs/benchmarks.md, Performance, "One heap for every
thread"): a server batch of 20 on a worker thread took 270k page faults and 10.9-11.4 s, against
15-160k and 9.2-9.5 s on the main heap; two lanes at batch 32 decoded 0.355-0.387 s a report against
0.385-0.412 s. The threads then share one malloc lock: one batch on the main thread, whose OpenMP
helper now allocates from the same heap, measured 0.397-0.456 s a report against 0.373-0.408 s, so
`radgen demo` and the Python API keep glibc's default (a `radgen generate` of one batch decodes on
the main thread too, and pays that cost: the command sets the heap before it knows how many batches).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from collections.abc import Callable

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the heap
TRIM_THRESHOLD = 512 << 20  # free heap memory kept before it is returned to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_USER_ARENA_SETTINGS = ("MALLOC_ARENA_MAX",)
NO_FAST_PATHS_ENV = "RADGEN_NO_CPU_FAST_PATHS"  # every CPU fast path off (radgen.models.fast reads it too)
_applied: list[bool] = []
_one_heap: list[bool] = []


def _mallopt(parameter: int, value: int) -> bool:
    return bool(ctypes.CDLL("libc.so.6").mallopt(parameter, value))


def keep_large_blocks_in_heap() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when they are set."""
    if _applied:
        return _applied[0]
    if not _glibc() or any(name in os.environ for name in _USER_SETTINGS):
        _applied.append(False)
        return False
    try:
        done = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # no libc.so.6 or no mallopt in it
        done = False
    log.debug("glibc mmap threshold %s MiB: %s", MMAP_THRESHOLD >> 20, "set" if done else "not set")
    _applied.append(done)
    return done


def fast_paths_disabled() -> bool:
    """RADGEN_NO_CPU_FAST_PATHS=1: every CPU fast path off. Here, not in radgen.models.fast, so the
    `radgen` command can read it before importing torch."""
    return os.environ.get(NO_FAST_PATHS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def one_heap_for_all_threads() -> bool:
    """Let every thread allocate from glibc's main heap (M_ARENA_MAX=1), once; True when set.

    Takes effect for threads that have not allocated yet, so call it before starting any: the
    `radgen` command does, first thing. Nothing happens where the C library is not glibc, where the
    user set MALLOC_ARENA_MAX or an arena tunable (GLIBC_TUNABLES), or with RADGEN_NO_CPU_FAST_PATHS=1."""
    if _one_heap:
        return _one_heap[0]
    user = any(name in os.environ for name in _USER_ARENA_SETTINGS) or "arena" in os.environ.get("GLIBC_TUNABLES", "")
    if not _glibc() or user or fast_paths_disabled():
        _one_heap.append(False)
        return False
    try:
        done = _mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        done = False
    log.debug("glibc arenas: %s", "one for every thread" if done else "glibc's default")
    _one_heap.append(done)
    return done


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # no dlopen(NULL) on Windows
        return None


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the OS (glibc malloc_trim); False where it is not available.

    Why: freed tensors stay in glibc's heaps (one arena per thread), resident for reuse, the more so
    with `keep_large_blocks_in_heap`'s trim threshold; pages freed in one thread's arena are not
    reused by another's. Trimming lowers the resident memory a process keeps between bursts of work
    (not a burst's own peak) and walks only free chunks, so it is cheap next to loading a model or
    decoding a batch.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
