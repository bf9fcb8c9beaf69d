"""Escalation's part in telling the customer that a person has the conversation."""

from __future__ import annotations

import uuid
from typing import Any, cast

from services.escalation.desk import Desk
from services.escalation.handlers import EscalationHandlers
from services.escalation.live import ConsoleFeed
from services.escalation.policy import PolicyStore
from shared import ownership
from shared.events import ReplyGenerated, ReplyGeneratedEvent, Role, RouteReason
from shared.kafka import EventBus
from tests.kit import reply_generated, turn_received


class FakeDesk:
    """Records what the handlers ask of the desk; a person already holds the conversation."""

    def __init__(self) -> None:
        self.opened: list[tuple[uuid.UUID, RouteReason]] = []
        self.told: list[tuple[str, uuid.UUID]] = []

    async def open_for_reply(self, event: ReplyGeneratedEvent, reason: RouteReason) -> bool:
        self.opened.append((event.event_id, reason))
        return True

    async def mark_told(self, conversation_id: str, event_id: uuid.UUID) -> bool:
        self.told.append((conversation_id, event_id))
        return True

    async def owner(self, conversation_id: str) -> ownership.Ownership:
        return ownership.Ownership(owner="queued", epoch=1)


class FakeConsoles:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def broadcast(self, frame: dict[str, Any], *, tenant: str) -> None:
        self.frames.append(frame)


def handlers(desk: FakeDesk) -> EscalationHandlers:
    return EscalationHandlers(
        cast(EventBus, None), PolicyStore(), cast(Desk, desk), cast(ConsoleFeed, FakeConsoles())
    )


def flagged(author: Role, flags: list[str]) -> ReplyGeneratedEvent:
    event = reply_generated(turn_received(), "I've passed this to a colleague.", author=author)
    payload = ReplyGenerated(**{**dict(event.payload), "flags": flags})
    return event.model_copy(update={"payload": payload})


async def test_an_approval_reply_queues_the_conversation_but_tells_nobody_yet() -> None:
    desk = FakeDesk()
    event = flagged(Role.BOT, ["needs_approval"])
    await handlers(desk).on_reply_generated(event)
    [(event_id, reason)] = desk.opened
    assert event_id == event.event_id
    assert reason.code == "generation_flags"
    assert desk.told == [], "a bot's approval line does not say a person holds the conversation"


async def test_an_agent_reply_tells_the_customer() -> None:
    desk = FakeDesk()
    event = flagged(Role.AGENT, ["agent:agent"])
    await handlers(desk).on_reply_generated(event)
    assert desk.opened == []
    assert desk.told == [(event.conversation_id, event.event_id)]
