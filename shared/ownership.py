"""Who may speak in a conversation: the bot, the agent queue or an agent, at which epoch.

Escalation owns the record (PostgreSQL is the truth) and mirrors it to Redis under
`<prefix>owner:<conversation_id>`; generation reads the mirror before each piece of a bot
reply, and escalation reads it to decide whether consoles should see a reply. Written and
read only through this module, so the JSON cannot drift between writer and readers.
"""

from __future__ import annotations

from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Owner = Literal["bot", "queued", "agent"]

KEY_TEMPLATE = "owner:{conversation}"
"""The mirror's key after the Redis key prefix (erasure deletes it)."""


class Ownership(BaseModel):
    """The owner of a conversation and the epoch of the last change of owner."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    owner: Owner
    epoch: int = Field(default=0, ge=0)
    """Bumped at every change of owner; a turn routed under an older epoch is stale."""

    def bot_may_speak(self, routed_epoch: int) -> bool:
        """True while the bot still owns the conversation at the epoch a turn was routed in."""
        return self.owner == "bot" and self.epoch <= routed_epoch


def owner_key(key_prefix: str, conversation_id: str) -> str:
    """The Redis key of a conversation's ownership mirror."""
    return key_prefix + KEY_TEMPLATE.format(conversation=conversation_id)


def encode(ownership: Ownership) -> str:
    """The mirror's value."""
    return ownership.model_dump_json()


def decode(raw: str | bytes | None) -> Ownership | None:
    """The ownership in a mirror value; None when there is none or it cannot be read."""
    if raw is None:
        return None
    try:
        return Ownership.model_validate_json(raw)
    except ValidationError:
        return None


async def read(redis: aioredis.Redis, key_prefix: str, conversation_id: str) -> Ownership | None:
    """The mirrored ownership of a conversation (None: never handed over, the bot's)."""
    return decode(await redis.get(owner_key(key_prefix, conversation_id)))


# Set the mirror unless it already holds a later epoch: a delayed delivery (the outbox relay
# after an outage) never rolls ownership back.
_WRITE_FORWARD_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and tonumber(record['epoch'])
     and tonumber(record['epoch']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


async def write(
    redis: aioredis.Redis, key_prefix: str, conversation_id: str, ownership: Ownership
) -> bool:
    """Mirror a conversation's ownership unless a later epoch is there; True if written."""
    written = await redis.eval(
        _WRITE_FORWARD_LUA,
        1,
        owner_key(key_prefix, conversation_id),
        encode(ownership),
        ownership.epoch,
    )
    return bool(written)
