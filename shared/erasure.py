"""Right to erasure: the part every service does when memory publishes `customer.erased`."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis
from prometheus_client import Counter

from shared.events import CustomerErasedEvent

ERASED_KEYS = Counter(
    "cbd_erasure_redis_keys_total", "Redis keys deleted because a customer was erased"
)
ERASURES = Counter("cbd_erasures_total", "customer.erased events this service has carried out")


async def delete_keys(redis: aioredis.Redis, patterns: Iterable[str]) -> int:
    """Delete every key matching the glob patterns, with SCAN so Redis is never blocked."""
    deleted = 0
    for pattern in patterns:
        batch: list[str] = []
        async for key in redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await redis.delete(*batch)
                batch = []
        if batch:
            deleted += await redis.delete(*batch)
    ERASED_KEYS.inc(deleted)
    return deleted


def conversation_keys(
    event: CustomerErasedEvent, prefix: str, templates: Iterable[str]
) -> list[str]:
    """Key patterns for each erased conversation: templates use `{conversation}`."""
    return [
        prefix + template.format(conversation=conversation)
        for conversation in event.payload.conversation_ids
        for template in templates
    ]
