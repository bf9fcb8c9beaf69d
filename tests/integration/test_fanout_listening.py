"""Waiting on a fan-out whose listener is subscribed on the real Redis stops when cancelled.

The wait answers at once once the listener is up; on Python 3.11 `asyncio.wait_for` swallowed
a cancellation arriving in that instant, so a socket handler waiting on it could carry on.
"""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from services.escalation.live import CONSOLE_CHANNEL, AgentHub
from shared.fanout import Fanout
from tests.kit import stops_when_cancelled

pytestmark = pytest.mark.integration


async def test_waiting_on_a_listening_fanout_stops_when_cancelled(
    redis_client: aioredis.Redis,
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}:"
    fanout = Fanout(redis_client, prefix, channel=CONSOLE_CHANNEL, receiver=AgentHub())
    async with fanout.listening():
        assert await stops_when_cancelled(fanout.wait_listening) == 0
