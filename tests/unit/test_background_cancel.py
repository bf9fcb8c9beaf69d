"""The consumer checks that run in a loop stop when cancelled.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives as the awaited call
completes, and a consumer's `position()` usually completes at once: a loop of such calls
then ignored the cancellation meant to stop it (a chaos run hung on its reply-topic reader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

from shared.lag import measure
from shared.rewind import rewind_past_end

PARTITIONS = [TopicPartition("t", p) for p in range(4)]


class InstantConsumer:
    """Answers at once, standing at the end of every partition."""

    def assignment(self) -> set[TopicPartition]:
        return set(PARTITIONS)

    def highwater(self, tp: TopicPartition) -> int:
        return 10

    async def position(self, tp: TopicPartition) -> int:
        return 10

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        return True


async def stops_when_cancelled(check: Callable[[], Awaitable[Any]]) -> int:
    """Cancel a loop of `check` at many different moments; how many cancellations were lost."""

    async def forever() -> None:
        while True:
            await check()
            await asyncio.sleep(0.0005)

    lost = 0
    for i in range(60):
        task = asyncio.create_task(forever())
        for _ in range(i % 9):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.05)
        if not done:
            lost += 1
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.01)
    return lost


async def test_the_rewind_check_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: rewind_past_end("s", "g", consumer)) == 0


async def test_the_lag_measure_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: measure("g", consumer)) == 0
