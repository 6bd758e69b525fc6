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
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_applied: list[bool] = []


def _mallopt(parameter: int, value: int) -> bool:
    return bool(ctypes.CDLL("libc.so.6").mallopt(parameter, value))


def keep_large_blocks_in_heap() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when they are set."""
    if _applied:
        return _applied[0]
    usable = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if not usable or any(name in os.environ for name in _USER_SETTINGS):
        _applied.append(False)
        return False
    try:
        done = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError):  # no libc.so.6 or no mallopt in it
        done = False
    log.debug("glibc mmap threshold %s MiB: %s", MMAP_THRESHOLD >> 20, "set" if done else "not set")
    _applied.append(done)
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
