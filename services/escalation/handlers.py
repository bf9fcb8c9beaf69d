"""Escalation service subscribers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.escalation.desk import Desk
from services.escalation.live import ConsoleFeed, message_frame
from services.escalation.policy import PolicyStore, decide
from shared.erasure import ERASURES, LateRecord
from shared.events import (
    AssistSuggestedEvent,
    CustomerErasedEvent,
    ReplyGeneratedEvent,
    Role,
    RouteReason,
    RouteTarget,
    TurnContextualizedEvent,
    TurnRouted,
    TurnRoutedEvent,
)
from shared.kafka import EventBus

DECISIONS = Counter("cbd_routing_decisions_total", "Turns routed, by target.", ["target"])
ESCALATIONS = Counter(
    "cbd_escalations_total", "Conversations routed to a human, by each rule that fired.", ["reason"]
)
TURNS_TO_ESCALATE = Histogram(
    "cbd_turns_to_escalate",
    "Customer turns into the conversation when it was routed to a human.",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30),
)


class EscalationHandlers:
    """Routes each turn to the bot or to a person, and keeps the agents' consoles current."""

    def __init__(
        self, bus: EventBus, policies: PolicyStore, desk: Desk, consoles: ConsoleFeed
    ) -> None:
        self.bus = bus
        self.policies = policies
        self.desk = desk
        self.consoles = consoles

    async def on_turn_contextualized(self, event: TurnContextualizedEvent) -> None:
        """Decide the route (a person who owns the conversation keeps it) and publish it."""
        turn = event.payload
        policy = self.policies.current()
        try:
            decision = await self.desk.route(
                event,
                lambda bot_turns: decide(
                    turn,
                    policy,
                    bot_turns=bot_turns,
                    customer_tier=turn.context.customer_tier,
                    conversation_id=event.conversation_id,
                ),
            )
        except LateRecord:
            # The customer was erased while this turn was in flight: nobody answers it, so
            # no reply, ticket or console frame about them appears after the erasure.
            return
        DECISIONS.labels(decision.target.value).inc()
        opened = decision.handoff is not None and decision.handoff.new
        if opened:
            for reason in decision.reasons:
                ESCALATIONS.labels(reason.code).inc()
            if turn.trajectory is not None:
                TURNS_TO_ESCALATE.observe(turn.trajectory.turns)
        await self.bus.publish(
            event.derive(TurnRoutedEvent, TurnRouted(**dict(turn), route=decision)),
        )
        if decision.target is RouteTarget.HUMAN:
            emotion = turn.emotion.model_dump(
                mode="json", include={"label", "sentiment", "intensity"}
            )
            await self.consoles.broadcast(
                message_frame(
                    event.conversation_id,
                    "customer",
                    turn.message.text,
                    turn.message.received_at.isoformat(),
                    emotion,
                ),
                tenant=event.tenant,
            )
            if opened:
                await self.consoles.broadcast({"type": "queue_changed"}, tenant=event.tenant)

    async def on_assist_suggested(self, event: AssistSuggestedEvent) -> None:
        """Pass suggested replies and coaching tips to the consoles of the customer's tenant."""
        await self.consoles.broadcast(
            {
                "type": "assist",
                "conversation_id": event.conversation_id,
                "turn_id": str(event.payload.turn_id),
                "suggestions": event.payload.suggestions,
                "tips": event.payload.tips,
                # The care check's verdict on each draft, shown beside it (issue #14).
                "verdicts": [v.value for v in event.payload.suggestion_verdicts],
                "findings": [
                    [f.detail or f.flag.value for f in fs]
                    for fs in event.payload.suggestion_findings
                ],
            },
            tenant=event.tenant,
        )

    async def on_reply_generated(self, event: ReplyGeneratedEvent) -> None:
        """Queue conversations the bot promised to a person; keep agents' transcripts live."""
        reply = event.payload
        rule = self.policies.current().rules.generation_flags
        raised = rule.raised(reply.flags) if rule is not None and rule.enabled else []
        if rule is not None and reply.author is Role.BOT and raised:
            # The reply itself is flagged (the LLM failed, a guardrail tripped): a person
            # takes over now rather than at the customer's next message.
            reason = RouteReason(
                code="generation_flags",
                detail="last reply flagged: " + ", ".join(raised),
                severity=rule.severity,
            )
            if await self.desk.open_for_reply(event, reason):
                ESCALATIONS.labels(reason.code).inc()
                await self.consoles.broadcast({"type": "queue_changed"}, tenant=event.tenant)
        if reply.author is Role.AGENT:
            # A person answered: the customer knows one is there, whatever opened the ticket.
            await self.desk.mark_told(event.conversation_id, event.event_id)
        owner = await self.desk.owner(event.conversation_id)
        if owner is None or owner.owner == "bot":
            return
        await self.consoles.broadcast(
            message_frame(
                event.conversation_id,
                reply.author.value,
                reply.text,
                event.occurred_at.isoformat(),
                None,
            ),
            tenant=event.tenant,
        )

    async def on_customer_erased(self, event: CustomerErasedEvent) -> None:
        """Delete the erased customer's tickets and conversation ownership."""
        erased = event.payload
        await self.desk.erase(
            [erased.erased_customer_id, *erased.identities],
            erased.conversation_ids,
            tenant=event.tenant,
            erased_at=erased.requested_at,
        )
        ERASURES.inc()
