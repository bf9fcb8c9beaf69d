"""The chaos harness tells a backlog from a loss by asking the edge's replay queue in Redis."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import cast

import redis.asyncio as aioredis

from cbd.chaos import Chaos
from cbd.runtime import Platform
from services.ingest.replay import DUE_KEY, pending_key


async def test_owed_counts_only_this_runs_queued_turns(
    stack_env: dict[str, str], redis_client: aioredis.Redis
) -> None:
    platform = cast(Platform, SimpleNamespace(env=lambda: stack_env))
    chaos = Chaos(platform, rate=1, duration_s=1)
    other = Chaos(platform, rate=1, duration_s=1)
    due = f"cbd:{DUE_KEY}"
    ours = [pending_key("cbd:", f"chaos-{chaos.run_id}-{i}", f"t{i}") for i in range(3)]
    theirs = pending_key("cbd:", f"chaos-{other.run_id}-0", "t0")
    assert await chaos._owed() == 0
    # Due in an hour: a running ingest (the session's platform) replays what is due, and
    # would take these made-up entries away.
    await redis_client.zadd(due, dict.fromkeys([*ours, theirs], time.time() + 3600))
    try:
        assert await chaos._owed() == 3
        assert await other._owed() == 1
        await redis_client.zrem(due, ours[0])
        assert await chaos._owed() == 2
    finally:
        await redis_client.zrem(due, *ours, theirs)
