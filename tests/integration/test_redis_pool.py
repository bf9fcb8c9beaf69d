"""A burst of concurrent Redis commands beyond the pool's size waits for a connection
instead of failing (the edge's reconnect storm), on the embedded redis-server."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from shared.service import redis_client

pytestmark = pytest.mark.integration


async def _burst(client: aioredis.Redis, n: int, hold_s: float = 0.2) -> list[object]:
    # BLPOP on an empty list holds its connection for `hold_s`, as a slow command would.
    key = f"it-pool-{secrets.token_hex(4)}"
    return await asyncio.gather(*(client.blpop([key], timeout=hold_s) for _ in range(n)))


async def test_commands_beyond_the_pool_wait_for_a_connection(stack_env: dict[str, str]) -> None:
    url = stack_env["CBD_REDIS_URL"]
    plain = aioredis.from_url(url, max_connections=2)
    try:
        # redis-py's default pool refuses the third concurrent command at once.
        with pytest.raises(MaxConnectionsError):
            await _burst(plain, 6)
    finally:
        await plain.aclose()
    client = redis_client(url, max_connections=2, wait_s=5.0)
    try:
        assert await _burst(client, 6) == [None] * 6
    finally:
        await client.aclose()


async def test_a_command_that_waits_too_long_fails_with_a_clear_error(
    stack_env: dict[str, str],
) -> None:
    client = redis_client(stack_env["CBD_REDIS_URL"], max_connections=1, wait_s=0.1)
    try:
        # After the client's retries (it retries connection errors): no silent hang.
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await _burst(client, 2, hold_s=2.0)
    finally:
        await client.aclose()
