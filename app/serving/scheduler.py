"""Admission control and dynamic micro-batching of forward passes.

Requests for the same model that arrive while a forward pass runs are padded into one batch for the
next pass, and the padding is cut back out (``Engine.forward``), so a batched result equals the
unbatched one up to float rounding of the different matrix shapes. Waiting is bounded: past
``max_queue`` waiting requests a new one is refused at once with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from ..errors import APIError
from ..models.engine import Attention, Encoded, Engine
from ..settings import Settings

log = logging.getLogger("headmap")

T = TypeVar("T")

#: How often a background batch looks again whether interactive requests are still waiting (seconds).
_BACKGROUND_POLL_S = 0.01


@dataclass
class _Job:
    enc: Encoded
    future: asyncio.Future[Attention] = field(repr=False)


@dataclass
class _Lane:
    """One engine's waiting jobs, and the event its worker sleeps on until a job arrives or one is called off."""

    jobs: deque[_Job] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """One lane and one worker task per engine; at most ``max_concurrency`` forward passes at once.

    Every request admitted here counts against one bound (``waiting``): batched forward passes
    (``run``) and other model work run beside the batcher (``call``, e.g. the explainer) alike.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lanes: dict[str, _Lane] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._running = asyncio.Semaphore(settings.max_concurrency)
        self.waiting = 0  # admitted and not yet finished
        self.incoming: Counter[str] = Counter()  # per model: requests still tokenizing, soon to queue
        self.batches_run = 0
        self.items_run = 0

    @property
    def capacity(self) -> int:
        """Requests admitted at once: those running (full batches) plus ``max_queue`` waiting."""
        s = self.settings
        return s.max_queue + s.max_concurrency * s.max_batch_size

    async def run(self, engine: Engine, enc: Encoded) -> Attention:
        """Attention of one input, (L, H, T, T) or captured. 503 when the queue is full, 504 past the time limit."""
        self._admit()
        job = _Job(enc, asyncio.get_running_loop().create_future())
        lane = self._lane_for(engine)
        lane.jobs.append(job)
        lane.changed.set()
        return await self._wait(job.future)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run blocking model work ``fn`` in a worker thread under the same admission, concurrency and time limit.

        503 when the queue is full, 504 past the time limit. On a timeout, work not yet started is skipped;
        work already running finishes in its thread and keeps its concurrency slot until then.
        """
        self._admit()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def go() -> None:
            async with self._running:
                if future.done():  # timed out while waiting for a slot
                    return
                try:
                    result = await run_in_threadpool(fn)
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                    return
                if not future.done():
                    future.set_result(result)

        task = asyncio.create_task(go())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return await self._wait(future)

    async def background(self, fn: Callable[[], T]) -> T:
        """Run blocking model work ``fn`` in the low-priority lane (corpus jobs, one batch at a time).

        It takes one of the ``max_concurrency`` slots like any model work, but only while no interactive
        request is admitted or on its way (``waiting``, ``incoming``): those go first, and a running
        background batch is short. Not counted against the queue bound and no time limit (a corpus job has
        its own bounds: one at a time, texts and bytes). Await it on the event loop (``background_gate``)."""
        while True:
            while self.waiting or self.incoming.total():
                await asyncio.sleep(_BACKGROUND_POLL_S)
            await self._running.acquire()
            if not (self.waiting or self.incoming.total()):
                break
            self._running.release()  # an interactive request arrived meanwhile: it gets the slot
            await asyncio.sleep(_BACKGROUND_POLL_S)
        try:
            return await run_in_threadpool(fn)
        finally:
            self._running.release()

    def background_gate(self) -> Callable[[Callable[[], T]], T]:
        """For a thread outside the event loop: ``gate(fn)`` runs ``fn`` through ``background`` and returns its
        result (call on the event loop, e.g. in a route, to bind the loop)."""
        loop = asyncio.get_running_loop()

        def gate(fn: Callable[[], T]) -> T:
            return asyncio.run_coroutine_threadsafe(self.background(fn), loop).result()

        return gate

    def _admit(self) -> None:
        if self.waiting >= self.capacity:
            raise APIError(503, "overloaded", "Too many requests are waiting; retry shortly.", {"Retry-After": "1"})

    async def _wait(self, future: asyncio.Future[T]) -> T:
        """Await an admitted request's result within ``request_timeout_s``; it counts as waiting until then."""
        self.waiting += 1
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.settings.request_timeout_s)
        except TimeoutError:
            future.cancel()  # the worker skips it if it has not started
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
            lane = self._lanes.get(engine.name)
            if lane is not None:
                lane.changed.set()  # a batch waiting for it stops waiting if it never comes (e.g. 413)

    def _lane_for(self, engine: Engine) -> _Lane:
        lane = self._lanes.get(engine.name)
        if lane is None:
            lane = self._lanes[engine.name] = _Lane()
            self._workers[engine.name] = asyncio.create_task(self._work(engine, lane), name=f"batcher-{engine.name}")
        return lane

    async def _work(self, engine: Engine, lane: _Lane) -> None:
        while True:
            batch = await self._next_batch(engine, lane)
            if batch:
                await self._run_batch(engine, batch)
            # Drop the finished jobs now: they hold results (75 MB at 512 tokens) that would otherwise
            # stay alive for as long as the worker waits for the next request.
            del batch

    async def _next_batch(self, engine: Engine, lane: _Lane) -> list[_Job]:
        """The oldest job plus whatever waits behind it, within the batch size and padded-token bounds.

        Requests still being tokenized are waited for, up to ``batch_window_ms``: without that, the
        first of a wave of concurrent requests would run alone while the rest queue behind it.
        A lone request never waits. The worker sleeps on ``lane.changed`` (set on every arrival and
        every announced request that finishes tokenizing), never polls.
        """
        while not lane.jobs:
            lane.changed.clear()
            await lane.changed.wait()
        batch = [lane.jobs.popleft()]
        longest = len(batch[0].enc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_window_ms / 1000
        while len(batch) < self.settings.max_batch_size:
            if not lane.jobs:
                if self.incoming[engine.name] <= 0:
                    break
                lane.changed.clear()
                try:
                    async with asyncio.timeout_at(deadline):
                        await lane.changed.wait()
                except TimeoutError:
                    break
                continue
            t = max(longest, len(lane.jobs[0].enc))  # peek: stop before an oversize batch
            if (len(batch) + 1) * t > self.settings.max_batch_tokens:
                break
            batch.append(lane.jobs.popleft())
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
        tasks = [*self._workers.values(), *self._calls]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._lanes.clear()
