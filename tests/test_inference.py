"""Micro-batching: concurrent requests share forward passes and get the unbatched answer."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from headmap.errors import APIError
from headmap.models.engine import dense
from headmap.serving.scheduler import Scheduler
from headmap.settings import Settings

TEXTS = ["Short one.", "A somewhat longer sentence about a cat.", "Mid length text here.", "x", "The end of it all."]


def test_concurrent_jobs_are_batched_and_equal_unbatched(registry) -> None:  # type: ignore[no-untyped-def]
    engine = registry.get("minilm")
    encs = [engine.encode(t) for t in TEXTS]
    alone = [engine.forward([e])[0] for e in encs]  # (L, H, T_i, T_i) each

    async def run() -> tuple[list[torch.Tensor], Scheduler]:
        scheduler = Scheduler(Settings(max_batch_size=8))
        try:
            results = await asyncio.gather(*(scheduler.run(engine, e) for e in encs))
        finally:
            await scheduler.close()
        return list(results), scheduler

    results, scheduler = asyncio.run(run())
    assert scheduler.items_run == len(TEXTS)
    assert scheduler.batches_run < len(TEXTS)  # at least one pass served several requests
    for result, want in zip(results, alone, strict=True):
        got = dense(result)  # a captured result, all layers and heads
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_full_queue_is_refused_at_once(registry) -> None:  # type: ignore[no-untyped-def]
    engine = registry.get("minilm")
    enc = engine.encode("hello")
    gate = threading.Event()
    real_forward = engine.run

    async def run() -> list[object]:
        scheduler = Scheduler(Settings(max_queue=2, max_concurrency=1, max_batch_size=1))

        def slow_forward(batch):  # type: ignore[no-untyped-def]
            gate.wait(10)
            return [dense(a) for a in real_forward(batch)]

        engine.run = slow_forward
        try:
            tasks = [asyncio.create_task(scheduler.run(engine, enc)) for _ in range(6)]
            await asyncio.sleep(0.2)
            done = [t for t in tasks if t.done()]
            refused = [t.exception() for t in done]
            gate.set()
            rest = await asyncio.gather(*(t for t in tasks if t not in done), return_exceptions=True)
        finally:
            del engine.run
            await scheduler.close()
        return refused + list(rest)

    outcomes = asyncio.run(run())
    refused = [o for o in outcomes if isinstance(o, APIError)]
    served = [o for o in outcomes if isinstance(o, torch.Tensor)]
    assert len(refused) == 3 and len(served) == 3  # 1 running + 2 queued admitted
    assert all(o.status == 503 and o.headers == {"Retry-After": "1"} for o in refused)


def test_timeout_is_504(registry) -> None:  # type: ignore[no-untyped-def]
    engine = registry.get("minilm")
    enc = engine.encode("hello")
    gate = threading.Event()
    real_forward = engine.run

    async def run() -> None:
        scheduler = Scheduler(Settings(request_timeout_s=0.2))

        def slow_forward(batch):  # type: ignore[no-untyped-def]
            gate.wait(10)
            return real_forward(batch)

        engine.run = slow_forward
        try:
            with pytest.raises(APIError) as info:
                await scheduler.run(engine, enc)
            assert info.value.status == 504 and info.value.error == "timeout"
            assert scheduler.waiting == 0
        finally:
            gate.set()
            del engine.run
            await scheduler.close()

    asyncio.run(run())


def test_batch_waits_for_announced_requests(registry) -> None:  # type: ignore[no-untyped-def]
    """A request still tokenizing when a batch forms joins it rather than queueing behind it."""
    engine = registry.get("minilm")
    a, b = engine.encode("first request"), engine.encode("second, a little later")

    async def run() -> Scheduler:
        scheduler = Scheduler(Settings(batch_window_ms=2000))

        async def late() -> torch.Tensor:
            with scheduler.announce(engine):
                await asyncio.sleep(0.1)  # "tokenizing"
            return await scheduler.run(engine, b)

        try:
            late_task = asyncio.create_task(late())
            await asyncio.sleep(0.01)
            await asyncio.gather(scheduler.run(engine, a), late_task)
        finally:
            await scheduler.close()
        return scheduler

    scheduler = asyncio.run(run())
    assert (scheduler.batches_run, scheduler.items_run) == (1, 2)


@pytest.mark.parametrize(("spare", "batches"), [(0, 1), (-1, 2)])
def test_max_batch_tokens_bounds_padded_batch(registry, spare: int, batches: int) -> None:  # type: ignore[no-untyped-def]
    """Two queued inputs share a pass only if 2 × the longer one's tokens fit in ``max_batch_tokens``."""
    engine = registry.get("minilm")
    short, long = engine.encode("a cat"), engine.encode("a somewhat longer sentence about a cat")
    budget = 2 * len(long) + spare

    async def run() -> Scheduler:
        scheduler = Scheduler(Settings(max_batch_tokens=budget, max_batch_size=8))
        try:
            await asyncio.gather(scheduler.run(engine, short), scheduler.run(engine, long))
        finally:
            await scheduler.close()
        return scheduler

    scheduler = asyncio.run(run())
    assert (scheduler.batches_run, scheduler.items_run) == (batches, 2)
