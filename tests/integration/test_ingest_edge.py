"""Rate limits, replay memory and burst merging against the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from services.ingest.channels.bursts import BurstMerger
from services.ingest.edge import EdgeGuard, Refused
from services.ingest.settings import IngestSettings
from shared.events import Channel
from shared.settings import RedisSettings
from tests.kit import eventually

pytestmark = pytest.mark.integration


def guard(redis_client: aioredis.Redis, customer: int = 30, tenant: int = 3000) -> EdgeGuard:
    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    g = EdgeGuard(
        IngestSettings(
            redis=RedisSettings(key_prefix=prefix),
            customer_rate_per_min=customer,
            tenant_rate_per_min=tenant,
        )
    )
    g.redis = redis_client
    return g


async def test_rate_limits_per_customer_and_per_tenant(redis_client: aioredis.Redis) -> None:
    g = guard(redis_client, customer=3, tenant=5)
    if time.time() % 60 > 50:
        # The windows are calendar minutes: start in a fresh one, not at its very end.
        await asyncio.sleep(61 - time.time() % 60)
    for _ in range(3):
        await g.rate_limit("api", "acme", "sam")
    with pytest.raises(Refused) as err:
        await g.rate_limit("api", "acme", "sam")
    assert err.value.status == 429
    assert err.value.retry_after is not None
    assert 0 < err.value.retry_after <= 60
    await g.rate_limit("api", "acme", "kim")
    with pytest.raises(Refused, match="tenant"):
        await g.rate_limit("api", "acme", "lee")
    await g.rate_limit("api", "other-tenant", "sam")


async def test_a_provider_message_id_is_accepted_once(redis_client: aioredis.Redis) -> None:
    g = guard(redis_client)
    assert await g.first_delivery("twilio", "SM1") is True
    assert await g.first_delivery("twilio", "SM1") is False
    assert await g.first_delivery("meta", "SM1") is True


async def test_fragments_within_the_window_become_one_turn(redis_client: aioredis.Redis) -> None:
    published: list[tuple[str, str, Channel, str, str]] = []

    async def publish(*args: object) -> None:
        published.append(args)  # type: ignore[arg-type]

    async def both_published() -> bool | None:
        return True if len(published) >= 2 else None

    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    # A window far longer than the three adds take, even on a busy runner: the test is about
    # merging, not about how fast the machine is.
    bursts = BurstMerger(redis_client, prefix, 2000, publish, poll_s=0.05)
    sweeper = asyncio.create_task(bursts.run())
    try:
        for i, text in enumerate(["hi", "my order", "it never came"]):
            await bursts.add("conv-1", "phone:447700900123", Channel.SMS, text, f"SM{i}")
            await asyncio.sleep(0.01)
        await bursts.add("conv-2", "phone:447700900999", Channel.WHATSAPP, "hello", "W1")
        await eventually(both_published, timeout_s=20, what="both bursts")
        # A moment more: a split burst would publish a third turn now.
        await asyncio.sleep(0.5)
    finally:
        sweeper.cancel()
    assert sorted(published) == [
        ("conv-1", "phone:447700900123", Channel.SMS, "hi\nmy order\nit never came", "SM0"),
        ("conv-2", "phone:447700900999", Channel.WHATSAPP, "hello", "W1"),
    ]
    assert await redis_client.keys(f"{prefix}*") == []


async def test_a_burst_that_fails_to_publish_is_kept(redis_client: aioredis.Redis) -> None:
    attempts: list[str] = []

    async def flaky(conversation_id: str, *_: object) -> None:
        attempts.append(conversation_id)
        if len(attempts) == 1:
            raise ConnectionError("broker down")

    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    bursts = BurstMerger(redis_client, prefix, 50, flaky)
    await bursts.add("conv-1", "phone:447700900123", Channel.SMS, "hello", "SM1")
    await asyncio.sleep(0.1)
    assert await bursts.flush_due() == 0
    await asyncio.sleep(1.1)
    assert await bursts.flush_due() == 1
    assert attempts == ["conv-1", "conv-1"]
