"""Whether the bot may still speak in a conversation: the ownership fence.

Escalation mirrors each conversation's owner and epoch to Redis. A turn routed to the bot
carries the epoch it was routed under; if a person has taken the conversation since (the owner
is no longer the bot, or the epoch moved on), the bot's reply is dropped instead of talking
over the person. The record's key and JSON belong to `shared.ownership`, its one writer.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import ownership

log = logging.getLogger(__name__)


class OwnershipFence:
    """Reads the owner that escalation mirrors to Redis."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix

    async def bot_may_speak(self, conversation_id: str, epoch: int) -> bool:
        """True while the bot still owns the conversation at the epoch the turn was routed in."""
        try:
            raw = await self.redis.get(ownership.owner_key(self.prefix, conversation_id))
        except RedisError:
            # Without the fence the PostgreSQL routing still holds for new turns; only a reply
            # racing a takeover could slip through, which beats silencing every reply.
            log.warning("ownership fence unavailable (Redis)", exc_info=True)
            return True
        if raw is None:
            return True
        record = ownership.decode(raw)
        if record is None:
            # Escalation writes the record only through shared.ownership, so an unreadable one
            # was written by something else; the routing in PostgreSQL still holds, as above.
            log.warning("ownership record of %s is unreadable; fence open", conversation_id)
            return True
        return record.bot_may_speak(epoch)
