"""The consumer checks that run in a loop stop when cancelled.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives as the awaited call
completes, and a consumer's `position()` usually completes at once: a loop of such calls
then ignored the cancellation meant to stop it (a chaos run hung on its reply-topic reader).
The same against a real consumer on the broker: `tests/integration/test_rewind.py`.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from shared.lag import measure
from shared.rewind import rewind_past_end
from tests.kit import stops_when_cancelled

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


async def test_the_rewind_check_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: rewind_past_end("s", "g", consumer)) == 0


async def test_the_lag_measure_stops_when_cancelled() -> None:
    consumer = InstantConsumer()
    assert await stops_when_cancelled(lambda: measure("g", consumer)) == 0
