"""Consumers standing past the end of a partition's log are moved back to its start.

A broker that comes back without its log (the embedded broker on in-memory storage after a
kill, or a real cluster after an unclean leader election) starts each partition again at
offset 0, while a consumer may still stand where the old log ended: its own position, or a
committed offset carried into the new group by a commit that raced the restart. Apache Kafka
answers a fetch past the end with OFFSET_OUT_OF_RANGE, and the client then applies
`auto_offset_reset` ("earliest" here). The embedded broker answers with an empty batch
instead, so the consumer waits, silently skipping every record the new log gets below its
old position: the edge replays such turns, but the replays land below it too.

    position > high-water mark of the last fetch  =>  the log was lost: seek to its start

On a healthy log the position never passes the high-water mark (a consumer reads only what
the fetch that carried the mark returned), so on Apache Kafka this never fires. Records the
group had already handled before the loss and that reach the new log again (the edge's
replays, the outbox) carry the same event ids, and every handler is idempotent on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol, cast

from prometheus_client import Counter

from shared.background import running
from shared.lag import LagSource, consumers_of

log = logging.getLogger(__name__)

REWINDS = Counter(
    "cbd_consumer_rewinds_total",
    "Partitions a consumer found itself past the end of (the broker lost its log) and read "
    "again from the start.",
    ["service", "group", "topic"],
)


class RewindTarget(LagSource, Protocol):
    """The part of aiokafka's AIOKafkaConsumer that rewinding needs: lag's, and a seek."""

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        """Fetch these partitions from their first record next."""


async def rewind_past_end(
    service: str, group: str, consumer: RewindTarget, timeout_s: float = 2.0
) -> list[Any]:
    """Seek every partition of `consumer` whose position is past its log's end back to the
    start; the partitions moved."""
    moved: list[Any] = []
    for tp in list(consumer.assignment()):
        high = consumer.highwater(tp)
        if high is None:
            continue  # no fetch answered yet
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
        # arrives as the awaited call completes (position() usually completes at once), and
        # the loop calling this every few seconds then never stops.
        async with asyncio.timeout(timeout_s):
            position = await consumer.position(tp)
        if position > high:
            log.warning(
                "%s stands at offset %d of %s[%d], past the log's end (%d): the broker lost "
                "its log; reading the partition again from its start",
                group,
                position,
                tp.topic,
                tp.partition,
                high,
            )
            await consumer.seek_to_beginning(tp)
            REWINDS.labels(service, group, tp.topic).inc()
            moved.append(tp)
    return moved


async def check_all(service: str, broker: Any) -> None:
    """One pass over every consumer of a FastStream broker."""
    for group, consumer in consumers_of(broker):
        try:
            await rewind_past_end(service, group, cast(RewindTarget, consumer))
        except Exception as exc:
            # A rebalance in progress (no position yet) or the broker still down: next pass.
            log.debug("rewind check failed for %s: %r", group, exc)


@contextlib.asynccontextmanager
async def rewinding(service: str, broker: Any, interval_s: float = 1.0) -> AsyncIterator[None]:
    """Check `broker`'s consumers every `interval_s` while the context is open."""

    async def loop() -> None:
        while True:
            await check_all(service, broker)
            await asyncio.sleep(interval_s)

    async with running(loop(), f"{service}-rewind"):
        yield
