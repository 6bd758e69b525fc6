"""The batching queue: concurrent requests share a batch; full queue → 503; slow model → 504."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from radgen.serve import BatchQueue, QueueFullError, ServeSettings, create_app
from radgen.serve.inference import ReportService
from tests.serve.tiny_model import png_bytes
from tests.serve.waiting import until


def test_concurrent_submissions_are_batched_in_order():
    batches = []

    def run_batch(payloads):
        batches.append(list(payloads))
        time.sleep(0.05)
        return [p * 10 for p in payloads]

    async def main():
        queue = BatchQueue(run_batch, max_batch=4, max_queue=16)
        await queue.start()
        try:
            return await asyncio.gather(*(queue.submit(i, timeout=10) for i in range(10)))
        finally:
            await queue.stop()

    results = asyncio.run(main())
    assert results == [i * 10 for i in range(10)]  # each caller gets its own result
    assert max(len(b) for b in batches) == 4  # never more than max_batch
    assert len(batches) <= 4  # 10 jobs in batches of up to 4 (+ the first, which may run alone)
    assert sorted(p for b in batches for p in b) == list(range(10))


def test_busy_time_counts_the_workers_time_only():
    def run_batch(payloads):
        time.sleep(0.1)
        if payloads == ["fail"]:
            raise ValueError("model exploded")
        return payloads

    async def main():
        queue = BatchQueue(run_batch, max_batch=4)
        await queue.start()
        try:
            await queue.submit("a", timeout=5)
            await asyncio.sleep(0.3)  # idle: not busy
            with pytest.raises(ValueError):
                await queue.submit("fail", timeout=5)
            return queue.busy_s
        finally:
            await queue.stop()

    busy = asyncio.run(main())
    assert 0.2 <= busy < 0.45  # two batches of 0.1 s, the failed one included; not the idle 0.3 s


def test_full_queue_and_timeout():
    release = threading.Event()

    def run_batch(payloads):
        release.wait(5)
        return list(payloads)

    async def main():
        queue = BatchQueue(run_batch, max_batch=1, max_queue=1, burst_gap_s=0)
        await queue.start()
        try:
            first = asyncio.create_task(queue.submit("a", timeout=10))  # taken by the worker, blocks
            await asyncio.sleep(0.05)
            second = asyncio.create_task(queue.submit("b", timeout=0.2))  # waits in the queue
            await asyncio.sleep(0.05)
            with pytest.raises(QueueFullError):
                await queue.submit("c", timeout=10)
            with pytest.raises(TimeoutError):
                await second
            release.set()
            assert await first == "a"
            # The abandoned job "b" is skipped, and the queue keeps serving.
            assert await queue.submit("d", timeout=5) == "d"
        finally:
            release.set()
            await queue.stop()

    asyncio.run(main())


def _gathering_run(gather_window_s: float, max_batch: int = 8, late: int = 1) -> tuple[list[list[str]], float, float]:
    """Job "a" runs alone on an idle queue while "b" waits; `late` more jobs arrive 50 ms after "a"
    finished, as the callers of a finished batch do. Returns the batches, how long "a" took to come
    back, and how long after "a" finished the batch holding "b" started."""
    batches, started, release = [], [], threading.Event()

    def run_batch(payloads):
        started.append(time.monotonic())
        batches.append(list(payloads))
        if payloads[0] == "a":
            release.wait(5)
        return list(payloads)

    async def main():
        queue = BatchQueue(run_batch, max_batch=max_batch, max_queue=16, burst_gap_s=0, gather_window_s=gather_window_s)
        await queue.start()
        try:
            begun = time.monotonic()
            first = asyncio.create_task(queue.submit("a", timeout=20))
            await until(lambda: batches, "job a is running")
            second = asyncio.create_task(queue.submit("b", timeout=20))
            await until(lambda: queue.waiting == 1, "job b is queued")
            release.set()
            await first
            a_back, finished = time.monotonic() - begun, time.monotonic()
            await asyncio.sleep(0.05)
            rest = [asyncio.create_task(queue.submit(f"c{n}", timeout=20)) for n in range(late)]
            await asyncio.gather(second, *rest)
            b_start = next(t for t, b in zip(started, batches) if "b" in b)
            return a_back, b_start - finished
        finally:
            release.set()
            await queue.stop()

    a_back, b_delay = asyncio.run(main())
    return batches, a_back, b_delay


def test_under_load_a_batch_waits_for_the_callers_of_the_batch_before():
    batches, a_back, b_delay = _gathering_run(gather_window_s=5.0)
    assert batches == [["a"], ["b", "c0"]]  # "c0" came back 50 ms after "a" and still joined "b"
    assert a_back < 2.5  # an idle queue starts a job at once, not after the 5 s window
    assert b_delay < 2.5  # "a"'s caller is back: "b" starts then, not after the window


def test_without_a_gather_window_late_callers_form_their_own_batch():
    batches, _, _ = _gathering_run(gather_window_s=0.0)
    assert batches == [["a"], ["b"], ["c0"]]


def test_a_batch_waits_no_longer_than_the_window_for_callers_that_do_not_come_back():
    batches, _, b_delay = _gathering_run(gather_window_s=0.3, late=0)
    assert batches == [["a"], ["b"]]
    assert 0.25 <= b_delay < 2.5


def test_an_idle_queue_takes_a_burst_in_one_batch():
    batches, started = [], []

    def run_batch(payloads):
        started.append(time.monotonic())
        batches.append(list(payloads))
        return list(payloads)

    async def main():
        queue = BatchQueue(run_batch, max_batch=8, max_queue=16, burst_gap_s=1.0, gather_window_s=5.0)
        await queue.start()
        try:
            jobs = []
            for name in "abc":  # 100 ms apart, as decoded uploads of simultaneous callers reach the queue
                jobs.append(asyncio.create_task(queue.submit(name, timeout=20)))
                await asyncio.sleep(0.1)
            last = time.monotonic()
            await asyncio.gather(*jobs)
            return started[0] - last
        finally:
            await queue.stop()

    delay = asyncio.run(main())
    assert batches == [["a", "b", "c"]]
    assert delay < 2.5  # one gap (1 s) after the burst ended, not the 5 s window


def test_gather_window_is_bounded():
    with pytest.raises(ValueError, match="gather_window_s"):
        BatchQueue(lambda p: p, gather_window_s=-1)
    with pytest.raises(ValueError, match="gather_window_s"):
        BatchQueue(lambda p: p, gather_window_s=float("nan"))
    with pytest.raises(ValueError, match="burst_gap_s"):
        BatchQueue(lambda p: p, burst_gap_s=11)


class _BlockingService(ReportService):
    """The real tiny model behind a gate, so the test decides when the worker may proceed."""

    gate = threading.Event()

    def run_batch(self, jobs):
        self.gate.wait(10)
        return super().run_batch(jobs)


def test_http_503_and_504(model_dir):
    from radgen.generate.decode import load_model

    service = _BlockingService(load_model(model_dir), model_dir=model_dir)
    app = create_app(service, ServeSettings(max_batch=1, max_queue=1, timeout_s=0.5))
    files = {"file": ("x.png", png_bytes(), "image/png")}

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
                first = asyncio.create_task(client.post("/v1/reports", files=files))  # in the worker, blocked
                await asyncio.sleep(0.3)
                second = asyncio.create_task(client.post("/v1/reports", files=files))  # queued
                await asyncio.sleep(0.1)
                third = await client.post("/v1/reports", files=files)
                assert third.status_code == 503
                assert "queue is full" in third.json()["detail"]
                assert third.headers["retry-after"] == "2"
                assert (await first).status_code == 504  # blocked past the 0.5 s timeout
                assert (await second).status_code == 504
                service.gate.set()
                ok = await client.post("/v1/reports", files=files)
                assert ok.status_code == 200, ok.text

    try:
        asyncio.run(main())
    finally:
        service.gate.set()


def test_failing_or_broken_batches_reach_every_caller():
    def failing(payloads):
        raise ValueError("model exploded")

    def short(payloads):
        return payloads[:-1]  # one result missing

    async def main(run_batch, error):
        queue = BatchQueue(run_batch, max_batch=4)
        await queue.start()
        try:
            results = await asyncio.gather(*(queue.submit(i, timeout=5) for i in range(3)), return_exceptions=True)
        finally:
            await queue.stop()
        assert all(isinstance(r, error) for r in results), results

    asyncio.run(main(failing, ValueError))
    asyncio.run(main(short, RuntimeError))
