"""A client message id's claim when the replica that took it dies before publishing.

`kill -9` between the claim (Redis) and the publish (Kafka) is played by a bus that raises a
BaseException: nothing in the intake's error handling runs, exactly as after a kill.
"""

from __future__ import annotations

import contextlib
import json
from typing import cast

import redis.asyncio as aioredis

from services.ingest.edge import EdgeGuard
from services.ingest.intake import Intake
from services.ingest.ownership import Owners, Party
from services.ingest.settings import IngestSettings
from shared.events import Channel, FeedbackReceivedEvent, TurnReceivedEvent
from shared.kafka import EventBus
from tests.kit import RecordingBus


class Killed(BaseException):
    """The process vanished mid-publish."""


def intake_for(settings: IngestSettings, bus: RecordingBus, redis: aioredis.Redis) -> Intake:
    guard = EdgeGuard(settings, redis)
    owners = Owners(redis, settings.redis.key_prefix, settings.owner_ttl_s)
    return Intake(settings, cast(EventBus, bus), redis, guard, owners)


async def test_a_resend_publishes_the_turn_a_killed_replica_claimed(
    settings: IngestSettings, bus: RecordingBus, fake_redis: aioredis.Redis
) -> None:
    party = Party("default", "cust-1")
    dying = RecordingBus()
    dying.fail_with = Killed()
    with contextlib.suppress(Killed):
        await intake_for(settings, dying, fake_redis).message(
            "conv-1", party, Channel.WEB, "where is my order?", "m-1"
        )
    assert dying.published == []

    # The client saw no acceptance, so it resends to a live replica.
    again = await intake_for(settings, bus, fake_redis).message(
        "conv-1", party, Channel.WEB, "where is my order?", "m-1"
    )

    assert again.duplicate
    [event] = bus.events(TurnReceivedEvent)
    assert str(event.event_id) == again.event_id
    assert str(event.payload.message.turn_id) == again.turn_id
    assert event.payload.message.text == "where is my order?"
    # Published now: a third send publishes nothing more.
    third = await intake_for(settings, bus, fake_redis).message(
        "conv-1", party, Channel.WEB, "where is my order?", "m-1"
    )
    assert third.turn_id == again.turn_id
    assert len(bus.published) == 1


async def test_a_published_claim_keeps_no_copy_of_the_event(
    settings: IngestSettings, bus: RecordingBus, fake_redis: aioredis.Redis
) -> None:
    party = Party("default", "cust-2")
    intake = intake_for(settings, bus, fake_redis)

    first = await intake.message("conv-2", party, Channel.WEB, "hello", "m-1")
    second = await intake.message("conv-2", party, Channel.WEB, "hello", "m-1")

    assert not first.duplicate
    assert second.duplicate
    assert second.turn_id == first.turn_id
    assert len(bus.published) == 1
    [key] = [k async for k in fake_redis.scan_iter("*cmid:conv-2:m-1")]
    raw = await fake_redis.get(key)
    assert raw is not None
    claim = json.loads(raw)
    assert claim["published"] is True
    assert "event" not in claim
    assert await fake_redis.ttl(key) > 0


async def test_a_resent_rating_is_published_if_the_first_replica_died(
    settings: IngestSettings, bus: RecordingBus, fake_redis: aioredis.Redis
) -> None:
    party = Party("default", "cust-3")
    await intake_for(settings, bus, fake_redis).message("conv-3", party, Channel.WEB, "hi", "m-1")
    dying = RecordingBus()
    dying.fail_with = Killed()
    with contextlib.suppress(Killed):
        await intake_for(settings, dying, fake_redis).rate(
            "conv-3", party, Channel.WEB, 5, "lovely", client_message_id="r-1"
        )

    again = await intake_for(settings, bus, fake_redis).rate(
        "conv-3", party, Channel.WEB, 5, "lovely", client_message_id="r-1"
    )
    third = await intake_for(settings, bus, fake_redis).rate(
        "conv-3", party, Channel.WEB, 5, "lovely", client_message_id="r-1"
    )

    [rating] = bus.events(FeedbackReceivedEvent)
    assert again.duplicate
    assert str(rating.event_id) == again.event_id == third.event_id
    assert rating.payload.rating == 5
