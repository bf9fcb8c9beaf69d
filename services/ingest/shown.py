"""The last reply each conversation's customer was shown, named on their next turn.

Memory stores a reply from the reply topic, one hop; the customer's next message reaches it
through emotion, two hops. A message sent the instant a reply appeared could be
contextualized before that reply was stored, and its context then lacked the reply the
customer was answering. The edge knows what it delivered: it notes the reply here and puts
its id on the next turn (`TurnReceived.after_reply_id`), and memory waits for it.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

SHOWN_TEMPLATE = "shown:{conversation}"


class LastShown:
    """One Redis key per conversation: the id of the last reply delivered in it."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, conversation_id: str) -> str:
        return self.prefix + SHOWN_TEMPLATE.format(conversation=conversation_id)

    async def record(self, conversation_id: str, reply_id: uuid.UUID) -> None:
        """Note `reply_id` as delivered (replies of a conversation arrive in order)."""
        await self.redis.set(self._key(conversation_id), str(reply_id), ex=self.ttl_s)

    async def last(self, conversation_id: str) -> uuid.UUID | None:
        """The last reply delivered in the conversation, if one was within the TTL."""
        value = await self.redis.get(self._key(conversation_id))
        if not value:
            return None
        try:
            return uuid.UUID(value if isinstance(value, str) else value.decode())
        except ValueError:
            return None
