"""A bounded request queue that batches concurrent requests onto one model worker thread.

Requests arrive on the asyncio event loop; `submit` puts a job on a bounded `asyncio.Queue`
(full → `QueueFullError`, which the app turns into 503). One dispatcher coroutine takes whatever
jobs are waiting — up to `max_batch` — and runs them as ONE call of `run_batch` on a single worker
thread. Why one thread: a PyTorch module is not safe to call from several threads at once, and
one batched `generate` over 8 images costs far less than 8 separate calls, so concurrency turns
into batch size instead of contention. While the worker is busy, new requests pile up in the
queue and form the next batch by themselves.

`gather_window_s`: under load (the worker finished a batch less than a window ago), a batch
waits up to this long after the worker becomes free for more requests to join: until it holds
as many jobs as the batch that just finished plus those that were waiting then (or
`max_batch`), whichever comes first. Why: the callers of the batch that just finished come back
tens to hundreds of ms later (their reply, their next upload, its decoding). Without the wait
they miss the batch that starts at once, and concurrent callers split into two groups that take
turns: each request waits for the other group's batch and then runs in a half-size batch, which
on a CPU with bf16 decodes fewer reports a second (docs/benchmarks.md, Performance, "... serving
in one batch per round of callers"). Then, and at an idle server, a batch takes requests while they keep arriving less
than `burst_gap_s` apart (a burst: images are decoded two at a time, so 20 simultaneous uploads
reach the queue over ~100 ms), within the same `gather_window_s`; a lone request waits one gap.

A job whose caller gave up (timeout → 504, client gone) is skipped when its batch is formed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """The queue holds `max_queue` waiting jobs; the caller should retry later (HTTP 503)."""


@dataclass
class _Job:
    payload: Any
    future: asyncio.Future


class BatchQueue:
    """`await queue.submit(payload, timeout)` → the result `run_batch` produced for that payload.

    run_batch(payloads) must return one result per payload, in order; it runs on the worker
    thread. An exception it raises is given to every caller of that batch.
    """

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 8,
                 max_queue: int = 64, burst_gap_s: float = 0.005, gather_window_s: float = 0.0) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        if not (0 <= burst_gap_s <= 10 and 0 <= gather_window_s <= 10):
            raise ValueError("burst_gap_s and gather_window_s must be between 0 and 10 seconds")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.burst_gap_s = burst_gap_s
        self.gather_window_s = gather_window_s
        self._last_finished = float("-inf")  # loop time the worker last finished a batch
        self._expected = 1  # jobs that batch had + jobs waiting then: what the next batch gathers up to
        self._queue: asyncio.Queue[_Job] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._dispatcher: asyncio.Task | None = None
        self.batches_run = 0
        self.jobs_run = 0
        self.largest_batch = 0
        self.busy_s = 0.0  # the worker's time in run_batch: with the caller's latency, shows what waiting and transport add

    # -- lifecycle (called from the app's lifespan, on the event loop) ----------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="radgen-model")
        self._dispatcher = asyncio.create_task(self._dispatch(), name="radgen-batch-dispatcher")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(QueueFullError("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    # -- requests ---------------------------------------------------------------------------------
    async def submit(self, payload: Any, timeout: float | None = None) -> Any:
        """Queue one payload and wait for its result; TimeoutError after `timeout` seconds."""
        if self._queue is None:
            raise RuntimeError("BatchQueue.start() was not called")
        job = _Job(payload, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._drop_abandoned()  # timed-out callers must not keep holding queue slots
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                raise QueueFullError(f"{self.max_queue} requests are already waiting") from None
        # wait_for cancels the future on timeout, which marks the job as abandoned for the dispatcher.
        return await asyncio.wait_for(job.future, timeout)

    def _drop_abandoned(self) -> None:
        """Remove jobs whose caller is gone. Runs on the event loop, like every queue access, so
        draining and re-adding the live jobs (in order) cannot race with the dispatcher."""
        assert self._queue is not None
        live = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                live.append(job)
        for job in live:
            self._queue.put_nowait(job)

    async def _dispatch(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            until = loop.time() + max(self.gather_window_s, self.burst_gap_s)
            if loop.time() - self._last_finished < self.gather_window_s:  # under load: the last batch's callers come back
                await self._gather(batch, min(self.max_batch, self._expected), until)
            await self._gather(batch, self.max_batch, until, gap=self.burst_gap_s)  # and a burst still arriving
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [job for job in batch if not job.future.done()]
            if not batch:
                continue
            self.batches_run += 1
            self.jobs_run += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [job.payload for job in batch])
            except Exception as err:  # noqa: BLE001 - handed to each waiting caller, which answers 500
                self._finished(len(batch), started)
                logger.error("radgen serve: batch of %d failed: %s", len(batch), type(err).__name__)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self._finished(len(batch), started)
            if len(results) != len(batch):  # a broken run_batch must not leave callers waiting until timeout
                error = RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)

    def _finished(self, jobs: int, started: float) -> None:
        assert self._queue is not None
        self._last_finished = asyncio.get_running_loop().time()
        self.busy_s += self._last_finished - started
        self._expected = jobs + self._queue.qsize()

    async def _gather(self, batch: list[_Job], target: int, until: float, gap: float | None = None) -> None:
        """Add waiting and arriving jobs to `batch` until it holds `target`, the loop's clock passes
        `until`, or (with `gap`) no job arrived for `gap` seconds."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while len(batch) < target:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = until - loop.time() if gap is None else min(gap, until - loop.time())
            if left <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                return
