"""BrokerWatch and the supervisor's restart pacing, without servers."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker

from cbd.procs import Backoff
from shared.events import Channel, CustomerMessage, TurnReceived, TurnReceivedEvent, utcnow
from shared.kafka import BrokerUnavailable, BrokerWatch, EventBus
from shared.settings import KafkaSettings


class FakeBroker:
    """Answers pings as told and records what was handed to it to publish."""

    def __init__(self) -> None:
        self.answers = True
        self.published: list[Any] = []

    async def ping(self, timeout: float | None) -> bool:  # noqa: ASYNC109 (FastStream's signature)
        return self.answers

    async def publish(self, body: bytes, **kwargs: Any) -> None:
        self.published.append(body)


def turn() -> TurnReceivedEvent:
    return TurnReceivedEvent.create(
        conversation_id="c-1",
        customer_id="cust-1",
        channel=Channel.API,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text="hi", received_at=utcnow())
        ),
    )


async def test_publishing_is_refused_at_once_while_the_broker_is_down() -> None:
    fake = FakeBroker()
    settings = KafkaSettings(create_topics=False)
    broker = cast(KafkaBroker, fake)
    watch = BrokerWatch(broker, settings)
    bus = EventBus(broker, settings, "test", watch)

    fake.answers = False
    assert await watch.check() is False
    with pytest.raises(BrokerUnavailable):
        await bus.publish(turn())
    assert fake.published == []  # never handed to the producer, so never sent later

    fake.answers = True
    assert await watch.check() is True
    await bus.publish(turn())
    assert len(fake.published) == 1


def test_restarts_are_immediate_then_paced() -> None:
    backoff = Backoff()
    assert backoff.due("emotion")
    # Died again right away: wait before the second restart, whatever else restarts.
    assert not backoff.due("emotion")
    assert backoff.due("memory")
