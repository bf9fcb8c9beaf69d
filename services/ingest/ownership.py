"""Whose conversation this is: one (tenant, customer) from its first message or connection.

The owner is kept in Redis (`owner:<conversation>`), shared by every replica, and refreshed
on each use. A socket, a post or a rating for a conversation somebody else owns is refused
with the same answer as for a conversation that does not exist (404
`conversation_not_found`), so ids cannot be probed for whose they are. Without Redis nothing
can be checked, and the edge refuses (503) rather than let anyone in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.http import ApiError

log = logging.getLogger(__name__)

OWNER_TEMPLATE = "owner:{conversation}"
"""The owner record's key (after the Redis key prefix); erasure deletes it."""


@dataclass(frozen=True)
class Party:
    """Who is speaking: a customer of a tenant, as the edge verified them."""

    tenant: str
    customer_id: str


def not_found() -> ApiError:
    """The one answer for a conversation that is unknown or someone else's."""
    return ApiError(404, "conversation_not_found", "there is no such conversation")


def unavailable() -> ApiError:
    """Ownership cannot be checked: refuse rather than guess."""
    return ApiError(503, "unavailable", "the conversation cannot be checked now; try again")


class Owners:
    """Claims and checks conversation owners in Redis."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.ttl_s = ttl_s

    def _key(self, conversation_id: str) -> str:
        return self.prefix + OWNER_TEMPLATE.format(conversation=conversation_id)

    @staticmethod
    def _value(party: Party) -> str:
        return json.dumps([party.tenant, party.customer_id])

    async def claim(self, conversation_id: str, party: Party) -> None:
        """Make the conversation `party`'s if nobody owns it; refuse if somebody else does."""
        key, value = self._key(conversation_id), self._value(party)
        try:
            if await self.redis.set(key, value, nx=True, ex=self.ttl_s):
                return
            owner = await self.redis.get(key)
            if owner == value:
                await self.redis.expire(key, self.ttl_s)
                return
        except Exception as exc:
            log.warning("ownership store unavailable", exc_info=True)
            raise unavailable() from exc
        raise not_found()

    async def check(self, conversation_id: str, party: Party) -> None:
        """Refuse unless the conversation exists and is `party`'s (ratings, resumes)."""
        try:
            owner = await self.redis.get(self._key(conversation_id))
        except Exception as exc:
            log.warning("ownership store unavailable", exc_info=True)
            raise unavailable() from exc
        if owner != self._value(party):
            raise not_found()
