"""The delivery middleware (`shared.kafka.Delivery`) on FastStream's in-memory test broker.

What the real-broker tests in tests/integration/test_kafka_delivery.py check slowly (and with
commits and redelivery, which an in-memory broker lacks), checked here message by message:
which failures are retried, which are dead-lettered with which reason, which are left for
redelivery, what each outcome counts, and that other subscribers on the broker are untouched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import REGISTRY
from pydantic import BaseModel

from shared.events import TurnReceivedEvent
from shared.kafka import ConsumerSpec, EventBus, PermanentError, make_broker, subscribe
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.kit import turn_received

SETTINGS = KafkaSettings(topic_prefix="delivery.")
SOURCE = SETTINGS.topic(Topic.TURN_RECEIVED)
Handler = Callable[[TurnReceivedEvent], Awaitable[None]]


def count(metric: str, **labels: str) -> float:
    return (
        REGISTRY.get_sample_value(metric, {"service": "svc", "topic": "turn.received", **labels})
        or 0.0
    )


class Harness:
    """A broker with one subscription under test and a capture of the dead-letter topic."""

    def __init__(self, handler: Handler, attempts: int = 3) -> None:
        self.broker: KafkaBroker = make_broker(SETTINGS, client_id="svc")
        subscribe(
            self.broker,
            EventBus(self.broker, SETTINGS, "svc"),
            settings=SETTINGS,
            topic=Topic.TURN_RECEIVED,
            model=TurnReceivedEvent,
            handler=handler,
            spec=ConsumerSpec(
                service="svc",
                group_id="svc-group",
                attempts=attempts,
                retry_backoff_s=0.0,
                redelivery_backoff_s=0.0,
            ),
        )
        self.letters: list[dict[str, Any]] = []

        @self.broker.subscriber(SETTINGS.topic(Topic.DEAD_LETTER), group_id="letters")
        async def capture(msg: KafkaMessage) -> None:
            self.letters.append(json.loads(msg.body))

    async def send(self, body: bytes, key: bytes = b"conv-1") -> None:
        async with TestKafkaBroker(self.broker) as test_broker:
            await test_broker.publish(body, topic=SOURCE, key=key)


def event_body(text: str = "hello") -> bytes:
    return turn_received(text, conversation_id="conv-1").model_dump_json().encode()


async def test_the_handler_receives_the_typed_event_and_the_outcome_is_counted() -> None:
    seen: list[TurnReceivedEvent] = []

    async def handler(event: TurnReceivedEvent) -> None:
        seen.append(event)

    ok = count("cbd_events_consumed_total", outcome="ok")
    await Harness(handler).send(event_body("typed"))
    [event] = seen
    assert isinstance(event, TurnReceivedEvent)
    assert event.payload.message.text == "typed"
    assert count("cbd_events_consumed_total", outcome="ok") == ok + 1


async def test_a_body_that_is_not_an_event_is_dead_lettered_with_the_reason_at_once() -> None:
    calls = 0

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1

    harness = Harness(handler)
    invalid = json.loads(event_body())
    del invalid["conversation_id"]
    invalid["payload"]["message"]["text"] = 7
    await harness.send(json.dumps(invalid).encode())
    await harness.send(b"\xff not json")
    assert calls == 0
    wrong_fields, not_json = harness.letters
    assert wrong_fields["reason"].startswith("invalid event: ")
    assert "conversation_id: Field required" in wrong_fields["reason"]
    assert "payload.message.text: Input should be a valid string" in wrong_fields["reason"]
    assert wrong_fields["error_type"] == "ValidationError"
    assert wrong_fields["attempts"] == 1
    assert wrong_fields["payload_encoding"] == "utf-8"
    assert json.loads(wrong_fields["payload"]) == invalid
    assert not_json["reason"].startswith("invalid event: message: Invalid JSON")
    assert not_json["payload_encoding"] == "base64"
    assert base64.b64decode(not_json["payload"]) == b"\xff not json"
    assert not_json["source_topic"] == SOURCE
    assert not_json["key"] == "conv-1"
    assert not_json["service"] == "svc"
    assert not_json["consumer_group"] == "svc-group"


async def test_a_failing_handler_is_retried_then_dead_lettered_with_its_last_error() -> None:
    calls = 0

    async def handler(event: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        raise ValueError(f"cannot handle {event.payload.message.text!r} ({calls})")

    retries = count("cbd_handler_retries_total")
    letters = count("cbd_dead_letters_total", error_type="ValueError")
    harness = Harness(handler, attempts=3)
    await harness.send(event_body("doomed"))
    assert calls == 3
    [letter] = harness.letters
    assert letter["attempts"] == 3
    assert letter["reason"] == "ValueError: cannot handle 'doomed' (3)"
    assert TurnReceivedEvent.model_validate_json(letter["payload"]).payload.message.text == "doomed"
    assert count("cbd_handler_retries_total") == retries + 2
    assert count("cbd_dead_letters_total", error_type="ValueError") == letters + 1


async def test_a_validation_error_inside_the_handler_is_the_handlers_not_the_messages() -> None:
    calls = 0

    class Downstream(BaseModel):
        amount: int

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        Downstream.model_validate({"amount": "lots"})

    harness = Harness(handler, attempts=2)
    await harness.send(event_body())
    assert calls == 2, "a handler's own validation failure is retried like any other error"
    [letter] = harness.letters
    assert letter["error_type"] == "ValidationError"
    assert not letter["reason"].startswith("invalid event")


async def test_a_permanent_error_skips_the_retries() -> None:
    calls = 0

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("this customer does not exist")

    harness = Harness(handler, attempts=5)
    await harness.send(event_body())
    assert calls == 1
    [letter] = harness.letters
    assert letter["reason"] == "this customer does not exist"
    assert letter["error_type"] == "PermanentError"


async def test_infrastructure_trouble_is_retried_then_left_for_redelivery_not_dead_lettered() -> (
    None
):
    calls = 0

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("database restarting")

    redelivered = count("cbd_events_consumed_total", outcome="redelivered")
    harness = Harness(handler, attempts=3)
    # The error leaves the middleware, so FastStream nacks (NACK_ON_ERROR) and does not commit;
    # the in-memory broker hands the error back to the publisher instead of redelivering.
    with pytest.raises(ConnectionError):
        await harness.send(event_body())
    assert calls == 3
    assert harness.letters == []
    assert count("cbd_events_consumed_total", outcome="redelivered") == redelivered + 1


async def test_a_transient_failure_that_clears_is_handled_once() -> None:
    calls = 0

    async def handler(_: TurnReceivedEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("slow database")

    harness = Harness(handler)
    await harness.send(event_body())
    assert calls == 2
    assert harness.letters == []


async def test_the_middleware_wraps_only_its_own_subscription() -> None:
    async def handler(_: TurnReceivedEvent) -> None:
        return None

    harness = Harness(handler)
    other: list[bytes] = []

    @harness.broker.subscriber("raw-tap", group_id="raw")
    async def tap(msg: KafkaMessage) -> None:
        other.append(msg.body)

    async with TestKafkaBroker(harness.broker) as test_broker:
        await test_broker.publish(b"\xff anything goes", topic="raw-tap")
    assert other == [b"\xff anything goes"]
    assert harness.letters == [], "a raw subscriber's message is not validated as an event"
