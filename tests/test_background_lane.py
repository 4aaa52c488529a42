"""The scheduler's low-priority lane (corpus jobs): it shares the concurrency bound with interactive model
work, and an interactive request waiting for a slot goes before a background batch waiting for one."""

from __future__ import annotations

import asyncio
import threading

from headmap.serving.scheduler import Scheduler
from headmap.settings import Settings


def test_interactive_work_goes_before_background_batches() -> None:
    order: list[str] = []
    release = threading.Event()

    def blocking() -> str:
        release.wait(30)
        order.append("first")
        return "first"

    def record(name: str) -> str:
        order.append(name)
        return name

    async def main() -> list[str]:
        scheduler = Scheduler(Settings(max_concurrency=1))
        first = asyncio.create_task(scheduler.call(blocking))  # holds the only slot
        while not scheduler.waiting:
            await asyncio.sleep(0)
        background = asyncio.create_task(scheduler.background(lambda: record("background")))
        await asyncio.sleep(0.05)  # the background batch is queued for the slot first ...
        interactive = asyncio.create_task(scheduler.call(lambda: record("interactive")))  # ... this comes later
        while scheduler.waiting < 2:
            await asyncio.sleep(0)
        release.set()
        return list(await asyncio.gather(first, interactive, background))

    assert asyncio.run(main()) == ["first", "interactive", "background"]
    assert order == ["first", "interactive", "background"]


def test_background_gate_runs_from_a_thread_and_returns_the_result() -> None:
    async def main() -> int:
        scheduler = Scheduler(Settings(max_concurrency=1))
        gate = scheduler.background_gate()
        return await asyncio.to_thread(lambda: gate(lambda: 6 * 7))

    assert asyncio.run(main()) == 42
