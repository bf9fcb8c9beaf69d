"""Background work stops with its context, even when the context ends in an error."""

from __future__ import annotations

import asyncio

import pytest

from shared.background import running


async def test_work_runs_while_the_context_is_open_and_is_cancelled_after() -> None:
    ticks: list[int] = []

    async def work() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    started: list[asyncio.Task[None]] = []

    async def lifespan() -> None:
        async with running(work(), "ticker") as task:
            started.append(task)
            await asyncio.sleep(0.05)
            raise RuntimeError("the lifespan failed")

    with pytest.raises(RuntimeError):
        await lifespan()
    assert started[0].cancelled()
    seen = len(ticks)
    await asyncio.sleep(0.05)
    assert seen > 0
    assert len(ticks) == seen
