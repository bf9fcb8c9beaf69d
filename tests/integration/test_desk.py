"""The handoff desk on real PostgreSQL and Redis: ownership, tickets, epochs, idempotency."""

from __future__ import annotations

import uuid

import pytest

from services.escalation.desk import HUMAN_OWNS, Desk, TicketConflict
from shared.events import (
    Channel,
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    RoutingDecision,
    TurnContextualized,
    TurnContextualizedEvent,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)

pytestmark = pytest.mark.integration


def turn_event(conversation_id: str, text: str = "hello") -> TurnContextualizedEvent:
    message = CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=utcnow())
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[EmotionLabel.NEUTRAL] = 1.0
    received = TurnReceivedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-desk",
        channel=Channel.WEB,
        payload=TurnReceived(message=message),
    )
    return received.derive(
        TurnContextualizedEvent,
        TurnContextualized(
            message=message,
            emotion=EmotionAnalysis(
                label=EmotionLabel.NEUTRAL, scores=scores, sentiment=0.0, intensity=0.0, model="t"
            ),
            context=ConversationContext(),
        ),
    )


def decision(target: RouteTarget, code: str = "explicit_request") -> RoutingDecision:
    return RoutingDecision(
        target=target, reasons=[RouteReason(code=code, detail="test")], policy="test"
    )


async def owner(desk: Desk, conversation_id: str) -> dict[str, object]:
    # Read back through shared.ownership, the record's one parser.
    record = await desk.owner(conversation_id)
    assert record is not None
    return record.model_dump()


async def test_a_person_owns_the_conversation_from_escalation_to_hand_back(desk: Desk) -> None:
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    bot = await desk.route(turn_event(conv), lambda _: decision(RouteTarget.BOT, "none"))
    assert bot.target is RouteTarget.BOT
    assert bot.epoch == 0

    escalating = turn_event(conv, "let me talk to a person")
    opened = await desk.route(escalating, lambda _: decision(RouteTarget.HUMAN))
    assert opened.handoff is not None
    assert opened.handoff.new is True
    assert opened.handoff.queue_position >= 1
    assert opened.epoch == 1
    assert await owner(desk, conv) == {"owner": "queued", "epoch": 1}

    again = await desk.route(escalating, lambda _: decision(RouteTarget.HUMAN))
    assert again.handoff is not None
    assert again.handoff.ticket_id == opened.handoff.ticket_id, "redelivery opens no new ticket"
    assert len([t for t in await desk.queue() if t.conversation_id == conv]) == 1

    # Whatever the policy would say, the person keeps the conversation.
    held = await desk.route(turn_event(conv), lambda _: decision(RouteTarget.BOT, "none"))
    assert held.target is RouteTarget.HUMAN
    assert held.reasons[0].code == HUMAN_OWNS
    assert held.handoff is not None
    assert held.handoff.new is False

    ticket_id = opened.handoff.ticket_id
    claimed = await desk.claim(ticket_id, "alice")
    assert claimed.claimed_by == "alice"
    with pytest.raises(TicketConflict):
        await desk.claim(ticket_id, "bob")
    with pytest.raises(TicketConflict):
        await desk.hand_back(ticket_id, "bob")
    assert await owner(desk, conv) == {"owner": "agent", "epoch": 2}

    await desk.hand_back(ticket_id, "alice")
    assert await owner(desk, conv) == {"owner": "bot", "epoch": 3}
    seen: list[int] = []

    def policy(bot_turns: int) -> RoutingDecision:
        seen.append(bot_turns)
        return decision(RouteTarget.BOT, "none")

    back = await desk.route(turn_event(conv), policy)
    assert back.target is RouteTarget.BOT
    assert back.epoch == 3
    assert seen == [1], "the bot's run counts from the hand-back"


async def test_a_flagged_bot_reply_queues_the_conversation_once(desk: Desk) -> None:
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    reply = ReplyGeneratedEvent.create(
        conversation_id=conv,
        customer_id="cust-desk",
        channel=Channel.WEB,
        payload=ReplyGenerated(
            turn_id=uuid.uuid4(),
            reply_id=uuid.uuid4(),
            author=Role.BOT,
            text="I've asked a member of our team to pick this up.",
            flags=["llm_fallback", "needs_human"],
        ),
    )
    reason = RouteReason(
        code="generation_flags", detail="last reply flagged: needs_human", severity="medium"
    )
    assert await desk.open_for_reply(reply, reason) is True
    assert await desk.open_for_reply(reply, reason) is False
    [ticket] = [t for t in await desk.queue() if t.conversation_id == conv]
    assert ticket.reasons[0]["code"] == "generation_flags"
    assert ticket.severity == "medium"
    assert (await owner(desk, conv))["owner"] == "queued"


def flagged_reply(conversation_id: str, flags: list[str]) -> ReplyGeneratedEvent:
    return ReplyGeneratedEvent.create(
        conversation_id=conversation_id,
        customer_id="cust-desk",
        channel=Channel.WEB,
        payload=ReplyGenerated(
            turn_id=uuid.uuid4(),
            reply_id=uuid.uuid4(),
            author=Role.BOT,
            text="I've passed this request to a colleague who can approve it.",
            flags=flags,
        ),
    )


APPROVAL = RouteReason(
    code="generation_flags", detail="last reply flagged: needs_approval", severity="medium"
)


async def test_a_ticket_a_flagged_reply_opened_is_announced_by_the_next_turn_once(
    desk: Desk,
) -> None:
    """The customer was never told a person took over: their next turn carries the notice
    (generation sends it), a redelivery of that turn again, any later turn not."""
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    bot = await desk.route(turn_event(conv), lambda _: decision(RouteTarget.BOT, "none"))
    assert bot.target is RouteTarget.BOT
    assert await desk.open_for_reply(flagged_reply(conv, ["needs_approval"]), APPROVAL)

    never_asked = lambda _: decision(RouteTarget.BOT, "none")  # noqa: E731
    following = turn_event(conv, "ok, and when do I get it?")
    routed = await desk.route(following, never_asked)
    assert routed.target is RouteTarget.HUMAN
    assert routed.handoff is not None
    assert routed.handoff.new is False
    assert routed.handoff.announce is True
    assert routed.handoff.owner == "queued"
    assert routed.handoff.eta_minutes > 0

    redelivered = await desk.route(following, never_asked)
    assert redelivered.handoff is not None
    assert redelivered.handoff.announce is True

    later = await desk.route(turn_event(conv, "hello?"), never_asked)
    assert later.handoff is not None
    assert later.handoff.announce is False


async def test_a_ticket_a_turn_opened_is_never_announced_again(desk: Desk) -> None:
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    opened = await desk.route(turn_event(conv), lambda _: decision(RouteTarget.HUMAN))
    assert opened.handoff is not None
    assert opened.handoff.new is True

    later = await desk.route(turn_event(conv, "still there?"), lambda _: decision(RouteTarget.BOT))
    assert later.handoff is not None
    assert later.handoff.new is False
    assert later.handoff.announce is False


async def test_an_agent_reply_tells_the_customer_before_their_next_turn(desk: Desk) -> None:
    conv = f"conv-{uuid.uuid4().hex[:8]}"
    assert await desk.open_for_reply(flagged_reply(conv, ["needs_human"]), APPROVAL)

    assert await desk.mark_told(conv, uuid.uuid4()) is True
    assert await desk.mark_told(conv, uuid.uuid4()) is False, "told once"

    later = await desk.route(turn_event(conv, "thanks"), lambda _: decision(RouteTarget.BOT))
    assert later.handoff is not None
    assert later.handoff.announce is False
