"""The chaos harness reads a customer's socket as the widget does."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from cbd.chaos import Chaos, Turn
from cbd.runtime import Platform


class FakeSocket:
    """Hands out the given frames, then waits (a quiet socket) or drops (a killed edge)."""

    def __init__(self, frames: list[dict[str, Any]], *, then_drop: bool = False) -> None:
        self.frames = [json.dumps(f) for f in frames]
        self.then_drop = then_drop
        self.sent: list[str] = []

    async def recv(self) -> str:
        if self.frames:
            return self.frames.pop(0)
        if self.then_drop:
            raise OSError("the edge went away")
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(self, data: str) -> None:
        self.sent.append(data)


def chaos() -> Chaos:
    return Chaos(cast(Platform, SimpleNamespace()), rate=1, duration_s=1)


def reply(turn_id: str, frame_id: str) -> dict[str, Any]:
    return {"type": "reply", "turn_id": turn_id, "reply_id": "r", "id": frame_id}


def accepted(turn_id: str, frame_id: str) -> dict[str, Any]:
    return {"type": "accepted", "turn_id": turn_id, "duplicate": True, "id": frame_id}


async def test_a_reply_replayed_before_its_acceptance_counts() -> None:
    """An edge killed after publishing a turn but before saying so: the resend is taken as a
    duplicate, and the reconnect's replay brings the reply before that acceptance."""
    turn = Turn(index=0, conversation_id="chaos-x-0")
    socket = FakeSocket([reply("A", "5-0"), accepted("A", "6-0")])
    # A harness that drops the early reply waits for another that never comes.
    last = await asyncio.wait_for(chaos()._follow(socket, turn, "{}", "0"), 5)
    assert turn.turn_id == "A"
    assert len(turn.replies) == 1
    assert last == "6-0"


async def test_a_reply_to_another_turn_is_not_this_turns() -> None:
    """A first try refused with 503 may still have reached the broker: its reply is not the
    reply to the turn that was accepted."""
    turn = Turn(index=0, conversation_id="chaos-x-0")
    socket = FakeSocket([reply("B", "5-0"), accepted("A", "6-0")], then_drop=True)
    with pytest.raises(OSError, match="the edge went away"):
        await chaos()._follow(socket, turn, "{}", "0")
    assert turn.turn_id == "A"
    assert turn.replies == []


async def test_a_second_reply_to_the_turn_is_a_duplicate() -> None:
    turn = Turn(index=0, conversation_id="chaos-x-0")
    socket = FakeSocket([accepted("A", "5-0"), reply("A", "6-0"), reply("A", "7-0")])
    last = await chaos()._follow(socket, turn, "{}", "0")
    assert len(turn.replies) == 2
    assert last == "7-0"
