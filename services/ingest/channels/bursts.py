"""Merging bursts: three quick texts from a customer become one turn and get one answer.

People type on phones in fragments ("hi" / "my order" / "it never came"). Each fragment is
parked in Redis; a conversation's burst is published as one turn once no fragment has come for
the window. The parking lot is shared by every replica and survives a replica's crash: any
replica's sweeper publishes bursts that are due, and a failed publish puts the burst back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from prometheus_client import Counter

from shared.events import MAX_MESSAGE_CHARS, Channel

log = logging.getLogger(__name__)

MERGED = Counter(
    "cbd_ingest_burst_fragments_total",
    "Messaging fragments parked for merging, by channel.",
    ["channel"],
)

Publish = Callable[[str, str, Channel, str, str], Awaitable[object]]
"""(conversation_id, customer_id, channel, text, client_message_id) -> acceptance."""


class BurstMerger:
    """Parks fragments per conversation and publishes each burst once it goes quiet."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key_prefix: str,
        window_ms: int,
        publish: Publish,
        poll_s: float = 0.2,
    ) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.window_s = window_ms / 1000
        self.publish = publish
        self.poll_s = poll_s
        self._due = f"{key_prefix}bursts"

    def _parked(self, conversation_id: str) -> str:
        return f"{self.prefix}burst:{conversation_id}"

    async def add(
        self, conversation_id: str, customer_id: str, channel: Channel, text: str, message_id: str
    ) -> None:
        """Park a fragment and push the burst's deadline back by one window."""
        MERGED.labels(channel.value).inc()
        if self.window_s <= 0:
            await self.publish(conversation_id, customer_id, channel, text, message_id)
            return
        fragment = json.dumps(
            {"customer_id": customer_id, "channel": channel.value, "text": text, "id": message_id}
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self._parked(conversation_id), fragment)
            pipe.expire(self._parked(conversation_id), 3600)
            pipe.zadd(self._due, {conversation_id: time.time() + self.window_s})
            await pipe.execute()

    async def flush_due(self) -> int:
        """Publish every burst whose window has passed; return how many were published."""
        due = await self.redis.zrangebyscore(self._due, "-inf", time.time())
        published = 0
        for member in due:
            conversation_id = member.decode() if isinstance(member, bytes) else str(member)
            # Whoever removes it owns it: one replica publishes each burst.
            if not await self.redis.zrem(self._due, conversation_id):
                continue
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrange(self._parked(conversation_id), 0, -1)
                pipe.delete(self._parked(conversation_id))
                fragments, _ = await pipe.execute()
            if not fragments:
                continue
            try:
                await self._publish(conversation_id, [json.loads(f) for f in fragments])
                published += 1
            except Exception:
                log.exception("could not publish a burst; parking it again")
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lpush(self._parked(conversation_id), *reversed(fragments))
                    pipe.zadd(self._due, {conversation_id: time.time() + 1.0})
                    await pipe.execute()
        return published

    async def _publish(self, conversation_id: str, fragments: list[dict[str, str]]) -> None:
        text = "\n".join(f["text"] for f in fragments)[:MAX_MESSAGE_CHARS]
        first = fragments[0]
        await self.publish(
            conversation_id, first["customer_id"], Channel(first["channel"]), text, first["id"]
        )

    async def run(self) -> None:
        """Sweep for due bursts until cancelled."""
        while True:
            try:
                await self.flush_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("burst sweeper failed; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.poll_s)
