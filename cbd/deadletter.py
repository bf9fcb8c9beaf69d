"""Inspect and replay the dead-letter topic.

`cbd deadletter list` shows what failed and why. `cbd deadletter replay` publishes each
dead-lettered message back to the topic it came from, with its original key, once the cause
is fixed. Replay commits its progress in its own consumer group, so running it twice does
not replay the same letter twice.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import DeadLetter
from shared.kafka import client_security
from shared.settings import KafkaSettings
from shared.topics import Topic

REPLAY_GROUP = "cbd-deadletter-replay"


@dataclass(frozen=True)
class Letter:
    """A dead letter and where it sits on the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter | None
    problem: str | None = None

    def original_bytes(self) -> bytes:
        """The message exactly as it was first published."""
        assert self.letter is not None
        if self.letter.payload_encoding == "base64":
            return base64.b64decode(self.letter.payload)
        return self.letter.payload.encode("utf-8")


async def _read(
    consumer: AIOKafkaConsumer, idle_ms: int = 1500
) -> AsyncIterator[tuple[int, int, bytes]]:
    """Records until the topic has been quiet for `idle_ms` (the end, for a CLI)."""
    while True:
        batch = await consumer.getmany(timeout_ms=idle_ms)
        if not batch:
            return
        for records in batch.values():
            for record in records:
                yield record.partition, record.offset, record.value


async def _wait_for_assignment(consumer: AIOKafkaConsumer, timeout_s: float = 30.0) -> None:
    """Joining a group takes a rebalance; reading before it ends would see an empty topic."""
    async with asyncio.timeout(timeout_s):
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)


def _parse(partition: int, offset: int, value: bytes) -> Letter:
    try:
        return Letter(partition, offset, DeadLetter.model_validate_json(value))
    except ValueError as exc:
        return Letter(partition, offset, None, f"not a dead letter: {exc}")


async def list_letters(settings: KafkaSettings) -> list[Letter]:
    """Every letter on the dead-letter topic, oldest first, without consuming anything."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        fetch_max_wait_ms=100,
        **client_security(settings),
    )
    await consumer.start()
    try:
        topic = settings.topic(Topic.DEAD_LETTER)
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        return [_parse(p, o, v) async for p, o, v in _read(consumer)]
    finally:
        await consumer.stop()


async def replay(
    settings: KafkaSettings, *, source_topic: str | None = None, dry_run: bool = False
) -> list[Letter]:
    """Republish dead letters not replayed before; return those replayed (or that would be)."""
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.DEAD_LETTER),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        **client_security(settings),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", **client_security(settings)
    )
    await consumer.start()
    await producer.start()
    replayed: list[Letter] = []
    try:
        await _wait_for_assignment(consumer)
        async for partition, offset, value in _read(consumer):
            letter = _parse(partition, offset, value)
            if letter.letter is None:
                continue
            if source_topic is not None and letter.letter.source_topic != source_topic:
                continue
            if not dry_run:
                await producer.send_and_wait(
                    letter.letter.source_topic,
                    letter.original_bytes(),
                    key=letter.letter.key.encode() if letter.letter.key else None,
                )
            replayed.append(letter)
        if not dry_run:
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
    return replayed


def describe(letter: Letter) -> str:
    """One line for a terminal."""
    if letter.letter is None:
        return f"{letter.partition}:{letter.offset}  ?  {letter.problem}"
    d = letter.letter
    return (
        f"{letter.partition}:{letter.offset}  {d.failed_at:%Y-%m-%d %H:%M:%S}  "
        f"{d.source_topic}[{d.partition}]@{d.offset}  {d.service}  {d.error_type}: {d.reason}"
    )
