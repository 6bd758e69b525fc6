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


def test_full_queue_and_timeout():
    release = threading.Event()

    def run_batch(payloads):
        release.wait(5)
        return list(payloads)

    async def main():
        queue = BatchQueue(run_batch, max_batch=1, max_queue=1, batch_window_s=0)
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
