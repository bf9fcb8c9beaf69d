"""Channel addresses as customer identities, and the conversation a message belongs to.

A phone number is the same person on SMS, WhatsApp and a voice call, so all three resolve to
one identity, `phone:<digits>`; memory maps it to the customer (and a tenant's CRM can link it
to a web account through memory's admin API).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

_NOT_DIGITS = re.compile(r"\D")


def phone_identity(address: str) -> str | None:
    """`+44 7700 900123`, `whatsapp:+447700900123` or `447700900123` -> `phone:447700900123`."""
    digits = _NOT_DIGITS.sub("", address.removeprefix("whatsapp:"))
    return f"phone:{digits}" if 6 <= len(digits) <= 15 else None


@dataclass(frozen=True)
class Address:
    """Where replies to a messaging conversation go."""

    provider: str
    """`twilio` or `meta`."""
    channel: str
    to: str
    """The customer's address in the provider's format."""


class Conversations:
    """One open conversation per channel and number, and the address to reply to."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str, idle_s: int) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.idle_s = idle_s

    async def current(self, channel: str, identity: str, address: Address) -> str:
        """The conversation this message continues, or a new one after a long silence."""
        digits = identity.removeprefix("phone:")
        key = f"{self.prefix}msgconv:{channel}:{digits}"
        # Random, so a conversation id says nothing about the number and cannot be guessed;
        # only this server-side key leads from the number to it.
        candidate = f"{channel}-{secrets.token_hex(16)}"
        await self.redis.set(key, candidate, nx=True, ex=self.idle_s)
        conversation = str(await self.redis.get(key) or candidate)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.expire(key, self.idle_s)
            pipe.set(
                f"{self.prefix}addr:{conversation}",
                json.dumps(asdict(address)),
                ex=self.idle_s + 24 * 3600,
            )
            await pipe.execute()
        return conversation

    async def address(self, conversation_id: str) -> Address | None:
        """Where replies in this conversation go, if it is a messaging one."""
        raw = await self.redis.get(f"{self.prefix}addr:{conversation_id}")
        return Address(**json.loads(raw)) if raw else None
