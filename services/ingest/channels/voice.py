"""Voice: a transcript in, speakable text and what the call should do next out.

Telephony stacks differ (Twilio, Genesys, SIP gateways), the contract does not: the adapter
turns the caller's speech into a turn, waits (briefly: a caller is on the line) for its reply,
and answers with text made for speech and an action: keep listening, transfer to a person,
or wait a moment longer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from services.ingest.channels.formatting import speakable
from shared.linear_re import compile_linear

Action = Literal["gather", "dial", "wait", "hangup"]

STILL_WORKING = "One moment while I look into that."
GIVE_UP = "I'm sorry, I couldn't get you an answer just now."
CONNECTING = "Let me connect you with a colleague."
HOLD = "A colleague will call you back as soon as one is free."


_FILLER = (
    r"(?:no|nope|nah|ok|okay|right|great|perfect|lovely|cool|alright|fine|yes|yeah|so|"
    r"thanks|thank you|thank you very much|thank you so much|thanks a lot|many thanks|cheers)"
)
_CLOSING = (
    r"(?:that s all|that is all|that s it|that is it|that s everything|that is everything|"
    r"nothing else|i m done|i am done|all done|no more questions|bye|goodbye|good bye|bye bye)"
)
_AFTER = (
    r"(?:thanks|thank you|thank you very much|cheers|bye|goodbye|good bye|bye bye|for now|"
    r"then|for today|for me|have a nice day|have a good day)"
)
_GOODBYE = compile_linear(rf"(?:{_FILLER} )*{_CLOSING}(?: {_AFTER})*")
_NOT_LETTERS = compile_linear(r"[^a-z]+")


def is_goodbye(speech: str) -> bool:
    """True when the caller's whole utterance closes the call ("no, that's all, thanks, bye").

    Only the whole utterance counts, so "I want to say goodbye to this contract" stays a turn.
    Then the call asks for a keypad rating instead of sending a turn nobody needs answered.
    """
    words = _NOT_LETTERS.sub(" ", speech.lower()).strip()
    return bool(words) and _GOODBYE.fullmatch(words) is not None


@dataclass(frozen=True)
class VoiceReply:
    """What to say and do next on the call."""

    speak: str
    action: Action
    dial: str | None = None
    turn_id: str | None = None
    """For `wait`: the turn whose reply is still coming."""
    tries: int = 0
    """For `wait`: how many times the reply was waited for already."""


class VoiceReplies:
    """The rendezvous between ingest's reply consumer and the webhook holding the caller."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str) -> None:
        self.redis = redis
        self.prefix = key_prefix

    def _key(self, turn_id: str) -> str:
        return f"{self.prefix}voice:{turn_id}"

    async def deliver(self, turn_id: str, text: str, flags: list[str]) -> None:
        """Called for each reply on a voice conversation; kept 10 minutes for the webhook."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self._key(turn_id), json.dumps({"text": text, "flags": flags}))
            pipe.expire(self._key(turn_id), 600)
            await pipe.execute()

    async def wait(self, turn_id: str, timeout_s: float) -> dict[str, object] | None:
        """The reply to this turn, or None if it did not come in time."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            # Short blocking pops: redis-py's client times a read out at its socket timeout,
            # whatever the BLPOP timeout says (redis/redis-py#2807).
            got = await self.redis.blpop([self._key(turn_id)], timeout=min(1.0, max(left, 0.01)))
            if got is not None:
                reply: dict[str, object] = json.loads(got[1])
                return reply
        return None


def next_step(
    reply: dict[str, object] | None,
    *,
    turn_id: str,
    agent_number: str,
    max_chars: int,
    tries: int,
    max_tries: int = 2,
) -> VoiceReply:
    """Turn a reply (or its absence) into what the call does next.

    `tries` counts the waits so far for this turn; after `max_tries` the caller is not kept
    in silence any longer.
    """
    if reply is None:
        if tries < max_tries:
            return VoiceReply(STILL_WORKING, "wait", turn_id=turn_id, tries=tries)
        if agent_number:
            return VoiceReply(f"{GIVE_UP} {CONNECTING}", "dial", dial=agent_number)
        return VoiceReply(f"{GIVE_UP} {HOLD}", "hangup")
    flags = reply.get("flags")
    text = speakable(str(reply.get("text", "")), max_chars)
    if isinstance(flags, list) and ("handoff" in flags or "needs_human" in flags):
        if agent_number:
            return VoiceReply(text or CONNECTING, "dial", dial=agent_number)
        return VoiceReply(f"{text} {HOLD}".strip(), "hangup")
    return VoiceReply(text, "gather")
