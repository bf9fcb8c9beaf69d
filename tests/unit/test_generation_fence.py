"""The ownership fence reads escalation's record through `shared.ownership`, its one codec."""

from __future__ import annotations

from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from services.generation.fence import OwnershipFence
from shared import ownership


class FakeRedis:
    """Just `get`, over a dict; `down` makes every call fail as an unreachable Redis does."""

    def __init__(self, values: dict[str, str] | None = None, *, down: bool = False) -> None:
        self.values = values or {}
        self.down = down

    async def get(self, key: str) -> str | None:
        if self.down:
            raise RedisConnectionError("connection refused")
        return self.values.get(key)


def fence_over(values: dict[str, str] | None = None, *, down: bool = False) -> OwnershipFence:
    return OwnershipFence(cast(aioredis.Redis, FakeRedis(values, down=down)), "cbd:")


def mirrored(owner: ownership.Owner, epoch: int) -> dict[str, str]:
    """What escalation writes for conversation c1, written by the module it writes with."""
    return {
        ownership.owner_key("cbd:", "c1"): ownership.encode(
            ownership.Ownership(owner=owner, epoch=epoch)
        )
    }


async def test_no_record_means_the_bot_may_speak() -> None:
    assert await fence_over().bot_may_speak("c1", 0)


async def test_the_bot_may_speak_at_its_epoch_and_not_after_a_takeover() -> None:
    assert await fence_over(mirrored("bot", 2)).bot_may_speak("c1", 2)
    assert not await fence_over(mirrored("bot", 3)).bot_may_speak("c1", 2)
    assert not await fence_over(mirrored("queued", 3)).bot_may_speak("c1", 3)
    assert not await fence_over(mirrored("agent", 4)).bot_may_speak("c1", 9)


async def test_redis_down_opens_the_fence_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert await fence_over(down=True).bot_may_speak("c1", 0)
    assert "ownership fence unavailable" in caplog.text


async def test_an_unreadable_record_opens_the_fence_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = {ownership.owner_key("cbd:", "c1"): "{not json"}
    assert await fence_over(values).bot_may_speak("c1", 0)
    assert "unreadable" in caplog.text
