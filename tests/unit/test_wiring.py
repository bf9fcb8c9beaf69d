"""Fast wiring tests on FastStream's in-memory test broker (the real-broker tests stay too).

They check what the real-broker tests check more slowly: a service's subscriber is on the
right topic, in its consumer group, validates the event, hands it to the handler, and what the
handler publishes lands on the topic of its type; a message that is not an event goes to the
dead-letter topic with the reason.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.handlers import EmotionHandlers
from services.emotion.trajectory import TrajectoryStore
from services.generation.handlers import GenerationHandlers, build_prompting
from services.generation.settings import GenerationSettings, ReplyMode
from shared.events import TurnReceivedEvent, TurnRoutedEvent
from shared.kafka import ConsumerSpec, EventBus, make_broker, subscribe
from shared.llm import ChatClient
from shared.settings import KafkaSettings
from shared.topics import Topic
from tests.kit import analyzed, contextualized, routed, turn_received

SETTINGS = KafkaSettings(topic_prefix="wiring.")


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    # Nothing listens on port 1: the trajectory is unavailable and the turn goes on without.
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    yield client
    await client.aclose()


def emotion_broker(analyzer: EmotionAnalyzer, redis: aioredis.Redis) -> KafkaBroker:
    broker = make_broker(SETTINGS, client_id="cbd-emotion")
    bus = EventBus(broker, SETTINGS, "emotion")
    handlers = EmotionHandlers(bus, analyzer, TrajectoryStore(redis, "wiring:", 60))
    subscribe(
        broker,
        bus,
        settings=SETTINGS,
        topic=Topic.TURN_RECEIVED,
        model=TurnReceivedEvent,
        handler=handlers.on_turn_received,
        spec=ConsumerSpec(service="emotion", group_id="cbd-emotion.turn.received", attempts=1),
    )
    return broker


async def test_emotion_analyses_a_turn_and_publishes_it_on_turn_analyzed(
    analyzer: EmotionAnalyzer, dead_redis: aioredis.Redis
) -> None:
    broker = emotion_broker(analyzer, dead_redis)
    analyzed: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []

    @broker.subscriber(SETTINGS.topic(Topic.TURN_ANALYZED), group_id="wiring-out")
    async def capture(msg: KafkaMessage) -> None:
        analyzed.append(json.loads(msg.body))

    @broker.subscriber(SETTINGS.topic(Topic.DEAD_LETTER), group_id="wiring-letters")
    async def capture_letters(msg: KafkaMessage) -> None:
        letters.append(json.loads(msg.body))

    turn = turn_received("This is the third time I'm asking, where is my refund?!")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            turn.model_dump_json().encode(),
            topic=SETTINGS.topic(Topic.TURN_RECEIVED),
            key=turn.conversation_id.encode(),
        )
        await test_broker.publish(b"{not an event", topic=SETTINGS.topic(Topic.TURN_RECEIVED))

    [event] = analyzed
    assert event["event_type"] == "turn.analyzed"
    assert event["causation_id"] == str(turn.event_id)
    assert event["payload"]["message"] == json.loads(turn.payload.message.model_dump_json())
    assert event["payload"]["trajectory"] is None, "no Redis: the turn goes on without one"
    [letter] = letters
    assert letter["source_topic"] == SETTINGS.topic(Topic.TURN_RECEIVED)
    assert letter["service"] == "emotion"
    assert letter["reason"].startswith("invalid event")


class OneReplyLLM:
    """A model that says one sentence, a word at a time."""

    model = "wiring"

    async def stream(self, messages: Any, **_: Any) -> AsyncIterator[str]:
        for word in ("Happy ", "to ", "help ", "with ", "that."):
            yield word


def generation_broker() -> KafkaBroker:
    broker = make_broker(SETTINGS, client_id="cbd-generation")
    bus = EventBus(broker, SETTINGS, "generation")
    cfg = GenerationSettings(delta_flush_ms=0, reply_mode=ReplyMode.LLM)
    prompts, rails = build_prompting(cfg)
    handlers = GenerationHandlers(bus, cast(ChatClient, OneReplyLLM()), cfg, None, prompts, rails)
    subscribe(
        broker,
        bus,
        settings=SETTINGS,
        topic=Topic.TURN_ROUTED,
        model=TurnRoutedEvent,
        handler=handlers.on_turn_routed,
        spec=ConsumerSpec(service="generation", group_id="cbd-generation.turn.routed", attempts=1),
    )
    return broker


async def test_generation_answers_a_routed_turn_on_reply_delta_and_reply_generated() -> None:
    broker = generation_broker()
    seen: dict[str, list[dict[str, Any]]] = {"delta": [], "reply": [], "letter": []}

    def capturing(into: list[dict[str, Any]]) -> Any:
        async def capture(msg: KafkaMessage) -> None:
            into.append(json.loads(msg.body))

        return capture

    for name, topic in (
        ("delta", Topic.REPLY_DELTA),
        ("reply", Topic.REPLY_GENERATED),
        ("letter", Topic.DEAD_LETTER),
    ):
        broker.subscriber(SETTINGS.topic(topic), group_id=f"wiring-{name}")(capturing(seen[name]))

    turn = routed(contextualized(analyzed(turn_received("Can you help me?"))))
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            turn.model_dump_json().encode(),
            topic=SETTINGS.topic(Topic.TURN_ROUTED),
            key=turn.conversation_id.encode(),
        )
        await test_broker.publish(b"[]", topic=SETTINGS.topic(Topic.TURN_ROUTED))

    [reply] = seen["reply"]
    assert reply["event_type"] == "reply.generated"
    assert reply["causation_id"] == str(turn.event_id)
    assert reply["payload"]["text"] == "Happy to help with that."
    assert "".join(d["payload"]["text"] for d in seen["delta"]) == "Happy to help with that."
    assert {d["event_type"] for d in seen["delta"]} == {"reply.delta"}
    [letter] = seen["letter"]
    assert letter["service"] == "generation"
    assert letter["reason"].startswith("invalid event")
