"""Delivery guarantees of the shared Kafka layer, against the real embedded broker."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer

from cbd import deadletter
from shared.events import Channel, CustomerMessage, TurnReceived, TurnReceivedEvent, utcnow
from shared.kafka import (
    ConsumerSpec,
    EventBus,
    PermanentError,
    ensure_topics,
    make_broker,
    subscribe,
)
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.kit import read_topic

pytestmark = pytest.mark.integration

Handler = Callable[[TurnReceivedEvent], Awaitable[None]]


def turn(text: str = "hello", conversation_id: str = "conv-it") -> TurnReceivedEvent:
    return TurnReceivedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-it",
        channel=Channel.API,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow())
        ),
    )


@asynccontextmanager
async def consuming(
    kafka: KafkaSettings, handler: Handler, attempts: int = 3
) -> AsyncIterator[EventBus]:
    """A broker subscribed to turn.received with `handler`, started and stopped around the block."""
    await ensure_topics(kafka)
    broker = make_broker(kafka, client_id="it")
    bus = EventBus(broker, kafka, "it")
    subscribe(
        broker,
        bus,
        settings=kafka,
        topic=Topic.TURN_RECEIVED,
        model=TurnReceivedEvent,
        handler=handler,
        spec=ConsumerSpec(
            service="it",
            group_id=f"it-{secrets.token_hex(3)}",
            attempts=attempts,
            retry_backoff_s=0.01,
        ),
    )
    await broker.start()
    try:
        yield bus
    finally:
        await broker.stop()


async def produce_raw(kafka: KafkaSettings, topic: Topic, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(kafka.topic(topic), value, key=key)
    finally:
        await producer.stop()


async def test_poison_message_is_dead_lettered_and_the_next_one_is_processed(
    isolated_kafka: KafkaSettings,
) -> None:
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(event: TurnReceivedEvent) -> None:
        seen.append(event.payload.message.text)
        done.set()

    async with consuming(isolated_kafka, handler) as bus:
        await produce_raw(isolated_kafka, Topic.TURN_RECEIVED, b"\xff not json", b"conv-it")
        await bus.publish(turn("after the poison"))
        await asyncio.wait_for(done.wait(), 30)
    assert seen == ["after the poison"]
    [letter] = await read_topic(isolated_kafka, Topic.DEAD_LETTER, expect=1)
    assert letter["source_topic"] == isolated_kafka.topic(Topic.TURN_RECEIVED)
    assert letter["error_type"] == "ValidationError"
    assert letter["reason"].startswith("invalid event")
    assert letter["payload_encoding"] == "base64"
    assert letter["key"] == "conv-it"


async def test_failing_handler_is_retried_then_dead_lettered(isolated_kafka: KafkaSettings) -> None:
    calls = 0

    async def handler(event: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"cannot handle {event.payload.message.text!r}")

    async with consuming(isolated_kafka, handler, attempts=3) as bus:
        await bus.publish(turn("doomed"))
        [letter] = await read_topic(isolated_kafka, Topic.DEAD_LETTER, expect=1)
    assert calls == 3
    assert letter["attempts"] == 3
    assert letter["error_type"] == "ValueError"
    assert "doomed" in letter["reason"]
    original = TurnReceivedEvent.model_validate_json(letter["payload"])
    assert original.payload.message.text == "doomed"


async def test_permanent_error_skips_the_retries(isolated_kafka: KafkaSettings) -> None:
    calls = 0

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("this customer does not exist")

    async with consuming(isolated_kafka, handler, attempts=5) as bus:
        await bus.publish(turn())
        [letter] = await read_topic(isolated_kafka, Topic.DEAD_LETTER, expect=1)
    assert calls == 1
    assert letter["reason"] == "this customer does not exist"


async def test_transient_failure_is_retried_without_dead_lettering(
    isolated_kafka: KafkaSettings,
) -> None:
    calls = 0
    done = asyncio.Event()

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database restarting")
        done.set()

    async with consuming(isolated_kafka, handler) as bus:
        await bus.publish(turn())
        await asyncio.wait_for(done.wait(), 30)
    assert calls == 2
    assert await read_topic(isolated_kafka, Topic.DEAD_LETTER, expect=1, timeout_s=2) == []


async def test_dead_letters_can_be_listed_and_replayed_once(isolated_kafka: KafkaSettings) -> None:
    fixed = False
    handled: list[str] = []
    replayed_seen = asyncio.Event()

    async def handler(event: TurnReceivedEvent) -> None:
        if not fixed:
            raise PermanentError("downstream rejected it")
        handled.append(event.payload.message.text)
        replayed_seen.set()

    async with consuming(isolated_kafka, handler) as bus:
        await bus.publish(turn("needs a second chance"))
        assert len(await read_topic(isolated_kafka, Topic.DEAD_LETTER, expect=1)) == 1
        listed = await deadletter.list_letters(isolated_kafka)
        assert [entry.letter.reason for entry in listed if entry.letter] == [
            "downstream rejected it"
        ]
        fixed = True
        replayed = await deadletter.replay(isolated_kafka)
        assert len(replayed) == 1
        await asyncio.wait_for(replayed_seen.wait(), 30)
    assert handled == ["needs a second chance"]
    assert await deadletter.replay(isolated_kafka) == [], "a letter must be replayed only once"
