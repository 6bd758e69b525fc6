"""Decoding lanes: on a CPU, several batches decode at once, each on its own share of the threads.

Why: one batch on 2 threads leaves much of the machine idle. A drafted pass is a few hundred small
ops a layer (norms, rotary embedding, cache writes, attention over a few queries) that do not split
well over threads, the walk that accepts drafted tokens is Python, and the last rows of a batch
(and rows decoded again without the shortlist) run alone for several passes. Two batches side by
side, one thread each, fill those gaps with the other batch's work. Measured on a 2-core Intel
Xeon with AMX (benchmarks/drafted_decoding.py --also-one-lane; docs/benchmarks.md, Performance,
"Two decoding lanes"): the shipped model in bf16 decoded 3.31-4.07x plain HF + peft at batch 32
with two lanes against 2.86-3.73x with one, in the same runs.

Lanes are threads of this process sharing one model: no second copy of the weights and no second
load. What `ReportGenerator.generate` changes on the model is safe to share: the draft table and
the shortlist take locks, grad mode is per thread, and each call has its own KV cache. torch's
intra-op thread count is per thread under OpenMP (what the x86-64 and aarch64 wheels use), so each
lane sets its own; under another parallel backend the count is process-wide, and lanes would only
take turns, so there radgen decodes one batch at a time.

Rows come back in the order of the batches, whichever lane finishes first, so output files and
progress look as with one lane. Which reports share a batch is the same too; what differs is the
draft table a batch starts from (a batch no longer drafts from the reports of the batch decoded
beside it), which changes speed and, in bf16, can change a word where pass shapes round
differently (fp32: the same text, tests/generate/test_lanes.py).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch

from radgen.errors import ConfigError

ENV = "RADGEN_DECODE_LANES"
# more lanes than this were never measured (2-core machines); a user may ask for more
DEFAULT_MAX_LANES = 2
# decoder precisions that get lanes by default: where they were measured to pay, on an AMX Xeon
# (docs/benchmarks.md, "Two decoding lanes"). bf16 (a CPU that computes it): the products are cheap
# and a pass is mostly small ops; two lanes decoded 0.95-1.17x the reports a second of one lane at
# batch 32 (1.07-1.17x in four of five runs) and 1.14-1.39x at batch 1. fp16 weights with fp32
# arithmetic (the AVX2 default): 1.11x at batch 32 there, not yet measured on an AVX2 CPU. fp32 is
# bound by its products (1.02x: not worth the memory), int8 was not measured: one lane unless asked.
LANED_PRECISIONS = frozenset({"bfloat16", "float16"})

Item = TypeVar("Item")
Result = TypeVar("Result")


def per_thread_counts() -> bool:
    """Whether torch's intra-op thread count is per thread here (the OpenMP backend)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def pick_lanes(device: torch.device | str, threads: int | None = None, batches: int | None = None,
               requested: int | None = None, precision: str | None = None) -> int:
    """How many batches to decode at once: `requested`, else $RADGEN_DECODE_LANES, else 2 on a CPU with 2+
    threads (one each) for a decoder whose `precision` (`radgen.models.fast.decoder_precision`) is in
    `LANED_PRECISIONS`, else 1. Never more than `batches` or `threads`, and 1 off the CPU or where thread
    counts are process-wide."""
    source, value = "lanes", requested
    if value is None and os.environ.get(ENV, "") != "":
        source, value = ENV, os.environ[ENV]
    threads = torch.get_num_threads() if threads is None else threads
    if value is None:
        lanes = min(DEFAULT_MAX_LANES, threads) if precision in LANED_PRECISIONS else 1
    else:
        try:
            lanes = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}={value!r} is not a whole number of decoding lanes") from None
        if lanes < 1:
            raise ConfigError(f"{source}={value!r}: decoding lanes must be at least 1")
    if torch.device(device).type != "cpu" or not per_thread_counts():
        return 1
    return max(1, min(lanes, threads, batches if batches is not None else lanes))


def model_lanes(model: Any, batches: int, requested: int | None = None, sampling: bool = False) -> int:
    """`pick_lanes` for decoding `batches` batches with `model` (a ReportGenerator) on its device and
    decoder precision; 1 when sampling (its per-batch seeds use torch's global generator)."""
    if sampling:
        return 1
    from radgen.models.fast import decoder_precision

    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):  # a stand-in without parameters
        device = torch.device("cpu")
    decoder = getattr(model, "decoder", None)
    return pick_lanes(device, batches=batches, requested=requested,
                      precision=decoder_precision(decoder) if decoder is not None else None)


def run_in_lanes(work: Callable[[Item], Result], items: Iterable[Item], lanes: int, threads: int | None = None,
                 count: int | None = None) -> Iterator[Result]:
    """`work(item)` for each item, `lanes` at a time on threads that each run torch on `threads //
    lanes` threads (at least 1); results in the items' order. Items are drawn only as lanes free up
    (at most `lanes` ahead), so a generator of image batches stays lazy. lanes=1: in this thread.
    `count` (how many items there are, where known): the last `count % lanes` items run one at a
    time on all the threads once the lanes are done, rather than on a lane's share while the other
    lanes have nothing left to do. An exception in any item is raised here, after the lanes stop."""
    if lanes <= 1:
        yield from map(work, items)
        return
    threads = torch.get_num_threads() if threads is None else threads
    per_lane = max(1, threads // lanes)
    laned = None if count is None else count - count % lanes
    previous = torch.get_num_threads()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="radgen-lane",
                                                 initializer=torch.set_num_threads, initargs=(per_lane,))
    pending: deque[concurrent.futures.Future] = deque()
    source = iter(items)
    started = 0
    try:
        for item in source:
            if laned is not None and started >= laned:  # a leftover: after the lanes, on every thread
                while pending:
                    yield pending.popleft().result()
                yield work(item)
                continue
            pending.append(pool.submit(work, item))
            started += 1
            if len(pending) >= lanes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        # a lane's set_num_threads also sets the count new threads start with: give back this one's
        torch.set_num_threads(previous)
