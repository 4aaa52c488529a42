"""Admission control and dynamic micro-batching of forward passes.

Requests for the same model that arrive while a forward pass runs are padded into one batch for the
next pass, and the padding is cut back out (``Engine.forward``), so a batched result equals the
unbatched one up to float rounding of the different matrix shapes. Waiting is bounded: past
``max_queue`` waiting requests a new one is refused at once with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from ..errors import APIError
from ..models.engine import Attention, Encoded, Engine
from ..settings import Settings

log = logging.getLogger("headmap")

#: Padded tokens one batch may hold (B x T_max); keeps one long input from dragging short ones along.
MAX_BATCH_TOKENS = 8192


@dataclass
class _Job:
    enc: Encoded
    future: asyncio.Future[Attention] = field(repr=False)


class Scheduler:
    """One queue and one worker task per engine; at most ``max_concurrency`` forward passes at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._running = asyncio.Semaphore(settings.max_concurrency)
        self.waiting = 0  # admitted and not yet finished
        self.incoming: Counter[str] = Counter()  # per model: requests still tokenizing, soon to queue
        self.batches_run = 0
        self.items_run = 0

    async def run(self, engine: Engine, enc: Encoded) -> Attention:
        """Attention of one input, (L, H, T, T) or captured. 503 when the queue is full, 504 past the time limit."""
        if self.waiting >= self.settings.max_queue + self.settings.max_concurrency * self.settings.max_batch_size:
            raise APIError(503, "overloaded", "Too many requests are waiting; retry shortly.", {"Retry-After": "1"})
        loop = asyncio.get_running_loop()
        job = _Job(enc, loop.create_future())
        self.waiting += 1
        try:
            self._queue_for(engine).put_nowait(job)
            return await asyncio.wait_for(asyncio.shield(job.future), self.settings.request_timeout_s)
        except TimeoutError:
            job.future.cancel()  # the worker skips it if it has not started
            raise APIError(
                504, "timeout", f"The request took longer than {self.settings.request_timeout_s:g} s."
            ) from None
        finally:
            self.waiting -= 1

    @contextmanager
    def announce(self, engine: Engine) -> Iterator[None]:
        """Mark a request for ``engine`` as on its way (tokenizing), so a batch being formed waits for it."""
        self.incoming[engine.name] += 1
        try:
            yield
        finally:
            self.incoming[engine.name] -= 1

    def _queue_for(self, engine: Engine) -> asyncio.Queue[_Job]:
        queue = self._queues.get(engine.name)
        if queue is None:
            queue = self._queues[engine.name] = asyncio.Queue()
            self._workers[engine.name] = asyncio.create_task(self._work(engine, queue), name=f"batcher-{engine.name}")
        return queue

    async def _work(self, engine: Engine, queue: asyncio.Queue[_Job]) -> None:
        while True:
            batch = await self._next_batch(engine, queue)
            if batch:
                await self._run_batch(engine, batch)
            # Drop the finished jobs now: they hold results (75 MB at 512 tokens) that would otherwise
            # stay alive for as long as the worker waits for the next request.
            del batch

    async def _next_batch(self, engine: Engine, queue: asyncio.Queue[_Job]) -> list[_Job]:
        """The oldest job plus whatever waits behind it, within the batch size and padded-token bounds.

        Requests still being tokenized are waited for, up to ``batch_window_ms``: without that, the
        first of a wave of concurrent requests would run alone while the rest queue behind it.
        A lone request never waits.
        """
        batch = [await queue.get()]
        longest = len(batch[0].enc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_window_ms / 1000
        while len(batch) < self.settings.max_batch_size:
            if queue.empty():
                if self.incoming[engine.name] <= 0 or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.0005)
                continue
            nxt = queue._queue[0]  # type: ignore[attr-defined]  # peek: stop before an oversize batch
            t = max(longest, len(nxt.enc))
            if (len(batch) + 1) * t > MAX_BATCH_TOKENS:
                break
            batch.append(queue.get_nowait())
            longest = t
        return [job for job in batch if not job.future.done()]  # timed out while waiting: skip

    async def _run_batch(self, engine: Engine, batch: list[_Job]) -> None:
        async with self._running:
            try:
                results = await run_in_threadpool(engine.run, [job.enc for job in batch])
            except Exception as exc:  # surfaces as each waiter's error, never kills the worker
                log.exception("forward pass of %s failed", engine.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
        self.batches_run += 1
        self.items_run += len(batch)
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        self._queues.clear()
