"""Escalation service subscribers."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.escalation.policy import PolicyStore, decide
from shared.events import RouteTarget, TurnContextualizedEvent, TurnRouted, TurnRoutedEvent
from shared.kafka import EventBus
from shared.topics import Topic

DECISIONS = Counter("cbd_routing_decisions_total", "Turns routed, by target.", ["target"])
ESCALATIONS = Counter(
    "cbd_escalations_total", "Turns routed to a human, by each rule that fired.", ["reason"]
)
TURNS_TO_ESCALATE = Histogram(
    "cbd_turns_to_escalate",
    "Customer turns into the conversation when it was routed to a human.",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30),
)


class EscalationHandlers:
    """Routes each turn to the bot or to a human, by the policy in force."""

    def __init__(self, bus: EventBus, policies: PolicyStore) -> None:
        self.bus = bus
        self.policies = policies

    async def on_turn_contextualized(self, event: TurnContextualizedEvent) -> None:
        """Decide the route and publish turn.routed."""
        turn = event.payload
        decision = decide(turn, self.policies.current())
        DECISIONS.labels(decision.target.value).inc()
        if decision.target is RouteTarget.HUMAN:
            for reason in decision.reasons:
                ESCALATIONS.labels(reason.code).inc()
            if turn.trajectory is not None:
                TURNS_TO_ESCALATE.observe(turn.trajectory.turns)
        await self.bus.publish(
            Topic.TURN_ROUTED,
            event.derive(TurnRoutedEvent, TurnRouted(**dict(turn), route=decision)),
        )
