"""The emotion trajectory store and the emotion handler against the real embedded Redis."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.handlers import EmotionHandlers
from services.emotion.trajectory import ConversationMood, TrajectoryStore
from shared.events import (
    Channel,
    CustomerMessage,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)
from shared.kafka import EventBus
from tests.kit import RecordingBus

pytestmark = pytest.mark.integration

TTL_S = 300


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture
def store(redis_client: aioredis.Redis) -> TrajectoryStore:
    return TrajectoryStore(redis_client, key_prefix=f"it-{secrets.token_hex(4)}:", ttl_s=TTL_S)


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url("redis://127.0.0.1:1/0")
    yield client
    await client.aclose()


def conversation() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


def turn(conversation_id: str, text: str) -> TurnReceivedEvent:
    return TurnReceivedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-emotion",
        channel=Channel.WEB,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow())
        ),
    )


async def test_unknown_conversation_loads_a_fresh_mood(store: TrajectoryStore) -> None:
    assert await store.load(conversation()) == ConversationMood()


async def test_save_then_load_round_trips_every_field(
    store: TrajectoryStore, redis_client: aioredis.Redis
) -> None:
    conv = conversation()
    mood = ConversationMood(
        turns=4,
        ema=-0.4321,
        negative_streak=2,
        last_negative_turn=4,
        recent_texts=["hi", "where is it?", "still nothing", "héllo ✓"],
        last_turn_id=str(uuid.uuid4()),
        last_result='{"turns": 4}',
    )

    await store.save(conv, mood)
    loaded = await store.load(conv)

    assert loaded == mood
    assert loaded is not mood
    key = f"{store.prefix}emotion:{conv}"
    ttl = await redis_client.ttl(key)
    assert 0 < ttl <= TTL_S


async def test_saving_renews_the_ttl(store: TrajectoryStore, redis_client: aioredis.Redis) -> None:
    conv = conversation()
    key = f"{store.prefix}emotion:{conv}"
    await store.save(conv, ConversationMood(turns=1))
    await redis_client.expire(key, 5)

    await store.save(conv, ConversationMood(turns=2))

    assert 5 < await redis_client.ttl(key) <= TTL_S
    assert (await store.load(conv)).turns == 2


async def test_handler_tracks_the_trajectory_over_three_turns(
    store: TrajectoryStore, analyzer: EmotionAnalyzer
) -> None:
    bus = RecordingBus()
    handlers = EmotionHandlers(cast(EventBus, bus), analyzer, store)
    conv = conversation()
    events = [
        turn(conv, "Hi, where is my parcel?"),
        turn(conv, "I asked an hour ago and still nothing."),
        turn(conv, "I asked an hour ago and still nothing."),
    ]

    for event in events:
        await handlers.on_turn_received(event)

    analyzed = bus.analyzed()
    assert len(analyzed) == 3
    for received, out in zip(events, analyzed, strict=True):
        assert out.causation_id == received.event_id
        assert out.conversation_id == conv
        assert out.payload.message == received.payload.message
    trajectories = [e.payload.trajectory for e in analyzed]
    assert all(t is not None for t in trajectories)
    first, second, third = (t for t in trajectories if t is not None)
    assert [first.turns, second.turns, third.turns] == [1, 2, 3]
    assert "repetition" in {s.name for s in analyzed[2].payload.emotion.signals}
    assert "repetition" not in {s.name for s in analyzed[1].payload.emotion.signals}
    assert first.negative_streak <= second.negative_streak <= third.negative_streak
    assert first.negative_streak < third.negative_streak
    assert first.escalation_risk < second.escalation_risk < third.escalation_risk
    assert "repetition" in third.risk_factors

    stored = await store.load(conv)
    assert stored.turns == 3
    assert stored.recent_texts == [e.payload.message.text for e in events]
    assert stored.last_turn_id == str(events[2].payload.message.turn_id)

    # Redelivery of the third turn: same trajectory, nothing advanced.
    await handlers.on_turn_received(events[2])

    again = bus.analyzed()[3]
    assert again.payload.trajectory == third
    assert again.event_id == analyzed[2].event_id
    assert "repetition" in {s.name for s in again.payload.emotion.signals}
    stored = await store.load(conv)
    assert stored.turns == 3
    assert len(stored.recent_texts) == 3


async def test_handler_publishes_without_trajectory_when_redis_is_down(
    analyzer: EmotionAnalyzer, dead_redis: aioredis.Redis
) -> None:
    bus = RecordingBus()
    store = TrajectoryStore(dead_redis, key_prefix="it-dead:", ttl_s=TTL_S)
    handlers = EmotionHandlers(cast(EventBus, bus), analyzer, store)
    event = turn(conversation(), "This is UNACCEPTABLE, I am furious!!")

    await handlers.on_turn_received(event)

    (out,) = bus.analyzed()
    assert out.payload.trajectory is None
    assert out.payload.message == event.payload.message
    assert out.payload.emotion.label.value in {"anger", "frustration"}
    assert out.causation_id == event.event_id
