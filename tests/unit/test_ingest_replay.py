"""Unit tests of the edge's turn replay: noticing a lost log, keeping and settling turns.

The Redis scripts that take due turns run against the real Redis in
tests/integration/test_ingest_replay.py; here only what needs no script.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import fakeredis
import pytest
import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata, TopicPartition

from services.ingest.delivery import Fanout
from services.ingest.edge import EdgeGuard
from services.ingest.handlers import IngestHandlers
from services.ingest.intake import Intake
from services.ingest.ownership import Owners, Party
from services.ingest.replay import LOG_LOSSES, LogWatch, TurnReplay, pending_key
from services.ingest.settings import IngestSettings
from shared.events import (
    Channel,
    CustomerErased,
    CustomerErasedEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    TurnReceivedEvent,
    utcnow,
)
from shared.http import ApiError
from shared.kafka import EventBus
from tests.kit import RecordingBus, assist_suggested, turn_received

T = "turn.received"


def test_growing_offsets_are_not_a_loss() -> None:
    watch = LogWatch()
    for offset in range(5):
        assert not watch.after(watch.before(T), T, 0, offset)


@pytest.mark.parametrize("again", [0, 3, 4])
def test_an_offset_handed_out_again_is_a_lost_log(again: int) -> None:
    watch = LogWatch()
    for offset in range(5):
        watch.after(watch.before(T), T, 0, offset)

    assert watch.after(watch.before(T), T, 0, again)


def test_publishes_acknowledged_out_of_order_are_not_a_loss() -> None:
    watch = LogWatch()
    watch.after(watch.before(T), T, 0, 10)
    first, second = watch.before(T), watch.before(T)
    # Both were in flight together; the later offset's publish resumed first.
    assert not watch.after(second, T, 0, 12)
    assert not watch.after(first, T, 0, 11)


def test_partitions_and_topics_are_compared_only_with_themselves() -> None:
    watch = LogWatch()
    watch.after(watch.before(T), T, 0, 50)
    assert not watch.after(watch.before(T), T, 1, 0)
    assert not watch.after(watch.before("feedback.received"), "feedback.received", 0, 0)


def test_after_a_loss_only_the_new_log_counts() -> None:
    watch = LogWatch()
    watch.after(watch.before(T), T, 0, 50)
    watch.after(watch.before(T), T, 1, 70)
    in_flight = watch.before(T)

    assert watch.after(watch.before(T), T, 0, 0)
    # Started before the loss: its floor is the old log's, so it proves nothing.
    assert not watch.after(in_flight, T, 1, 0)
    # Partition 1's old offset was forgotten with the old log.
    assert not watch.after(watch.before(T), T, 1, 1)
    assert not watch.after(watch.before(T), T, 0, 1)
    assert watch.after(watch.before(T), T, 0, 1)


class OffsetBus(RecordingBus):
    """A bus that answers like the broker: the partition and offset of each record."""

    def __init__(self) -> None:
        super().__init__()
        self.next_offset = 0

    async def publish(self, event: Any, /, *, confirm: bool = True) -> RecordMetadata:
        await super().publish(event, confirm=confirm)
        offset, self.next_offset = self.next_offset, self.next_offset + 1
        topic = event.event_type
        return RecordMetadata(topic, 0, TopicPartition(topic, 0), offset, None, 0, None)


P = IngestSettings().redis.key_prefix


def replay_of(redis: fakeredis.FakeAsyncRedis, bus: RecordingBus) -> TurnReplay:
    return TurnReplay(
        cast(aioredis.Redis, redis),
        cast(EventBus, bus),
        P,
        after_s=60,
        attempts=3,
        clock=lambda: 1000.0,
    )


async def test_publishing_notices_a_broker_that_lost_its_log() -> None:
    bus = OffsetBus()
    replay = replay_of(fakeredis.FakeAsyncRedis(decode_responses=True), bus)
    for _ in range(3):
        await replay.publish(turn_received())
    assert not replay.log_lost
    before = LOG_LOSSES._value.get()

    bus.next_offset = 0  # the broker restarted empty
    await replay.publish(turn_received())

    assert replay.log_lost
    assert LOG_LOSSES._value.get() == before + 1


def intake_with(redis: fakeredis.FakeAsyncRedis, bus: RecordingBus) -> tuple[Intake, TurnReplay]:
    settings = IngestSettings()
    replay = replay_of(redis, bus)
    client = cast(aioredis.Redis, redis)
    intake = Intake(
        settings,
        cast(EventBus, bus),
        client,
        EdgeGuard(settings, client),
        Owners(client, P, 3600),
        replay,
    )
    return intake, replay


async def test_an_accepted_turn_is_kept_until_its_reply_comes_back() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    bus = RecordingBus()
    intake, replay = intake_with(redis, bus)

    accepted = await intake.message("conv-1", Party("demo", "sam"), Channel.WEB, "Hello")

    key = pending_key(P, "conv-1", accepted.turn_id)
    kept = TurnReceivedEvent.model_validate_json(str(await redis.hget(key, "event")))
    assert kept == bus.events(TurnReceivedEvent)[0]
    assert await redis.zscore(P + "pending-due", key) == 1000.0 + 60
    assert await redis.ttl(key) > 0

    handlers = IngestHandlers(cast(Fanout, _NoFanout(redis)), P, replay=replay)
    reply = kept.derive(
        ReplyGeneratedEvent,
        ReplyGenerated(
            turn_id=kept.payload.message.turn_id,
            reply_id=uuid.uuid4(),
            author=Role.BOT,
            text="Hi",
        ),
    )
    await handlers.on_reply_generated(reply)

    assert not await redis.exists(key)
    assert await redis.zcard(P + "pending-due") == 0


async def test_agent_suggestions_settle_a_turn_a_person_holds() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    bus = RecordingBus()
    intake, replay = intake_with(redis, bus)
    await intake.message("conv-2", Party("demo", "sam"), Channel.WEB, "Still there?")
    event = bus.events(TurnReceivedEvent)[0]
    assert await redis.zcard(P + "pending-due") == 1

    handlers = IngestHandlers(cast(Fanout, _NoFanout(redis)), P, replay=replay)
    await handlers.on_assist_suggested(assist_suggested(event))

    assert await redis.zcard(P + "pending-due") == 0


async def test_suggestions_beside_a_handoff_notice_leave_the_turn_to_the_notice() -> None:
    """The notice (reply.generated) and the suggestions (assist.suggested) travel on two
    topics; a broker that loses its log can keep the one and lose the other. Settled on the
    suggestions, a lost notice would never be replayed."""
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    bus = RecordingBus()
    intake, replay = intake_with(redis, bus)
    await intake.message("conv-3", Party("demo", "sam"), Channel.WEB, "A person, please")
    event = bus.events(TurnReceivedEvent)[0]
    plain = assist_suggested(event)
    suggested = plain.model_copy(
        update={"payload": plain.payload.model_copy(update={"replied": True})}
    )

    handlers = IngestHandlers(cast(Fanout, _NoFanout(redis)), P, replay=replay)
    await handlers.on_assist_suggested(suggested)

    assert await redis.zcard(P + "pending-due") == 1


async def test_a_turn_the_broker_refused_is_not_kept() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    bus = RecordingBus()
    bus.fail_with = ConnectionError("broker down")
    intake, _ = intake_with(redis, bus)

    with pytest.raises(ApiError) as refused:
        await intake.message("conv-3", Party("demo", "sam"), Channel.WEB, "Hello")

    assert refused.value.status == 503
    # The customer was told to retry: a replay would answer a turn they will send again.
    assert await redis.zcard(P + "pending-due") == 0
    assert await redis.keys(P + "pending:*") == []


async def test_erasure_forgets_unanswered_turns() -> None:
    redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    intake, replay = intake_with(redis, RecordingBus())
    await intake.message("conv-4", Party("demo", "sam"), Channel.WEB, "My card is lost")
    erased = CustomerErasedEvent.create(
        conversation_id="conv-4",
        customer_id="sam",
        channel=Channel.WEB,
        payload=CustomerErased(
            erased_customer_id="sam",
            conversation_ids=["conv-4"],
            requested_by="test",
            requested_at=utcnow(),
        ),
    )

    handlers = IngestHandlers(cast(Fanout, _NoFanout(redis)), P, replay=replay)
    await handlers.on_customer_erased(erased)

    assert await redis.keys(P + "pending:*") == []


class _NoFanout:
    """Delivery is not under test here."""

    def __init__(self, redis: Any = None) -> None:
        self.redis = redis

    async def publish(self, *_: Any, **__: Any) -> str:
        return "1-0"
