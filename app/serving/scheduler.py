"""Admission control and dynamic micro-batching of forward passes.

Requests for the same model that arrive while a forward pass runs are padded into one batch for the
next pass, and the padding is cut back out (``Engine.forward``), so a batched result equals the
unbatched one up to float rounding of the different matrix shapes. Waiting is bounded: past
``max_queue`` waiting requests a new one is refused at once with 503 and ``Retry-After``.

Admission is also by bytes: each request names its expected peak (``serving.memory``) and a ``Hold``
that keeps those bytes until its response has been sent; it waits in the queue (same bound, same time
limit) until the byte pool has room, first come, first served.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import APIError
from ..models.engine import Encoded, Engine, Output
from ..settings import Settings
from . import memory
from .memory import BytePool, Hold, TooBig
from .threads import in_torch_thread

log = logging.getLogger("headmap")

T = TypeVar("T")

#: How often a background batch looks again whether interactive requests are still waiting (seconds).
_BACKGROUND_POLL_S = 0.01


@dataclass
class _Job:
    enc: Encoded
    future: asyncio.Future[Output] = field(repr=False)
    hold: Hold | None = None
    started: list[bool] = field(default_factory=lambda: [False])  # set by the batcher when its pass begins


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
        budget, source = memory.budget_bytes(settings)
        self.memory = BytePool(memory.pool_bytes(settings, memory.rss_bytes() or 0))
        self.memory.on_idle = self._trim_soon
        self._trimming = False
        self._trim_timer: asyncio.TimerHandle | None = None
        self.memory_sized = False  # set once the models are loaded and the pool sized from the RSS then
        log.info("memory budget %d MiB (%s)", budget // memory.MIB, source)

    def size_memory(self) -> None:
        """Set the byte pool from the resident memory now (call once the models are loaded)."""
        memory.trim()  # what loading left in the allocator is not the models' resident size
        resident = memory.rss_bytes() or 0
        self.memory.resize(memory.pool_bytes(self.settings, resident))
        self.memory_sized = True
        log.info(
            "memory: %d MiB resident with the models loaded; %d MiB for requests",
            resident // memory.MIB,
            self.memory.capacity // memory.MIB,
        )

    def hold(self) -> Hold:
        """A request's hold on the byte pool; the caller releases it once the response has been sent."""
        return Hold(self.memory)

    def _trim_soon(self) -> None:
        """Nothing is held any more: once nothing has been for ``memory.TRIM_IDLE_S``, give the allocator's free
        pages back (in a thread, one trim at a time). Each release to zero restarts the wait."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        self._trim_timer = loop.call_later(memory.TRIM_IDLE_S, self._trim_if_idle)

    def _trim_if_idle(self) -> None:
        self._trim_timer = None
        if self._trimming or self.memory.used:
            return  # a request holds bytes again: its release starts the wait anew
        loop = asyncio.get_running_loop()
        self._trimming = True

        def done(_: object) -> None:
            self._trimming = False

        loop.run_in_executor(None, memory.trim).add_done_callback(done)

    @property
    def capacity(self) -> int:
        """Requests admitted at once: those running (full batches) plus ``max_queue`` waiting."""
        s = self.settings
        return s.max_queue + s.max_concurrency * s.max_batch_size

    async def run(self, engine: Engine, enc: Encoded, nbytes: int = 0, hold: Hold | None = None) -> Output:
        """Attention of one input, (L, H, T, T) or captured. 503 when the queue is full, 504 past the time limit.

        ``nbytes`` are reserved into ``hold`` before the job joins a batch (waiting, in the queue, until
        they are free); a caller without a hold gets them back when this returns.
        """
        self._admit()
        future: asyncio.Future[Output] = asyncio.get_running_loop().create_future()
        own = hold is None and nbytes > 0
        hold = self.hold() if own else hold

        started = [False]

        def enqueue() -> None:
            lane = self._lane_for(engine)
            lane.jobs.append(_Job(enc, future, hold, started))
            lane.changed.set()

        async def go(reserved: bool) -> Output:
            if not reserved:
                await self._reserve(nbytes, hold)
                enqueue()
            return await asyncio.shield(future)

        try:
            # Bytes free at once: the job joins its lane now, before any await, so a batch forming for the
            # requests announced with it (``announce``) finds it there.
            reserved = self._try_reserve(nbytes, hold)
            if reserved:
                enqueue()
            return await self._wait(go(reserved), future, started)
        finally:
            if own and hold is not None:
                hold.release()

    async def call(self, fn: Callable[[], T], nbytes: int = 0, hold: Hold | None = None) -> T:
        """Run blocking model work ``fn`` in a worker thread under the same admission, concurrency and time limit.

        503 when the queue is full, 504 past the time limit. On a timeout, work not yet started is skipped;
        work already running finishes in its thread and keeps its concurrency slot, and its bytes, until then.
        ``nbytes`` are reserved into ``hold`` first, as in ``run``.
        """
        self._admit()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        own = hold is None and nbytes > 0
        hold = self.hold() if own else hold
        started = [False]

        async def work() -> None:
            async with self._running:
                if future.done():  # timed out while waiting for a slot
                    return
                started[0] = True
                if hold is not None:
                    hold.pin()
                try:
                    result = await in_torch_thread(fn)
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                    return
                finally:
                    if hold is not None:
                        hold.unpin()
                if not future.done():
                    future.set_result(result)

        async def go() -> T:
            await self._reserve(nbytes, hold)
            task = asyncio.create_task(work())
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
            return await asyncio.shield(future)

        try:
            return await self._wait(go(), future, started)
        finally:
            if own and hold is not None:
                hold.release()

    def _try_reserve(self, nbytes: int, hold: Hold | None) -> bool:
        """Take ``nbytes`` into ``hold`` if they are free now and nobody waits before them (or none are needed)."""
        if nbytes <= 0 or hold is None:
            return True
        if not self.memory.try_acquire(nbytes):
            return False
        hold.add(nbytes)
        return True

    async def _reserve(self, nbytes: int, hold: Hold | None) -> None:
        """Wait until ``nbytes`` are free, then record them in ``hold``: at most half the time limit (then 503
        ``overloaded``, leaving a request that gets its bytes time for its work), 413 if they never could be."""
        if nbytes <= 0 or hold is None:
            return
        patience = self.settings.request_timeout_s / 2  # the other half is left for the work itself
        try:
            async with asyncio.timeout(patience):
                await self.memory.acquire(nbytes)
        except TimeoutError:
            raise APIError(
                503,
                "overloaded",
                f"The server's memory was taken by other requests for {patience:g} s; retry shortly.",
                {"Retry-After": "1"},
            ) from None
        except TooBig as exc:
            raise APIError(
                413,
                "too_large_for_memory",
                f"This request needs about {exc.nbytes / memory.MIB:.0f} MiB at its peak; the server's memory "
                f"budget leaves {exc.capacity / memory.MIB:.0f} MiB for requests (HEADMAP_MEMORY_BUDGET_MB). Ask for "
                "fewer layers or heads, a shorter text, or use POST /api/runs for long inputs.",
            ) from None
        hold.add(nbytes)

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
            return await in_torch_thread(fn)
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

    async def _wait(self, work: Coroutine[Any, Any, T], future: asyncio.Future[Any], started: list[bool]) -> T:
        """Await an admitted request's ``work`` within ``request_timeout_s``; it counts as waiting until then.

        On a timeout or cancellation ``future`` (the result the worker sets) is cancelled: the worker skips
        the job if it has not started, and a byte reservation still waiting is withdrawn. A request whose
        model work never started (it waited for bytes, a slot or a batch all along) gets 503 ``overloaded``
        with ``Retry-After``: the server was too busy, and a retry may well succeed. One whose work started
        and did not finish in time gets 504.
        """
        self.waiting += 1
        try:
            return await asyncio.wait_for(work, self.settings.request_timeout_s)
        except BaseException as exc:
            future.cancel()  # the worker skips it if it has not started
            if not isinstance(exc, TimeoutError):
                raise
            if not started[0]:
                raise APIError(
                    503,
                    "overloaded",
                    f"The server was too busy to start this request within {self.settings.request_timeout_s:g} s; "
                    "retry shortly.",
                    {"Retry-After": "1"},
                ) from None
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
            holds = [job.hold for job in batch if job.hold is not None]
            for job in batch:
                job.started[0] = True
            for hold in holds:  # a waiter that times out mid-pass keeps its bytes until the pass ends
                hold.pin()
            try:
                results = await in_torch_thread(lambda: engine.run([job.enc for job in batch]))
            except Exception as exc:  # surfaces as each waiter's error, never kills the worker
                log.exception("forward pass of %s failed", engine.name)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            finally:
                for hold in holds:
                    hold.unpin()
        self.batches_run += 1
        self.items_run += len(batch)
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    async def close(self) -> None:
        if self._trim_timer is not None:
            self._trim_timer.cancel()
        tasks = [*self._workers.values(), *self._calls]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._lanes.clear()
