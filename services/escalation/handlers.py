"""Escalation service subscribers."""

from __future__ import annotations

from services.escalation.policy import decide
from shared.events import TurnContextualizedEvent, TurnRouted, TurnRoutedEvent
from shared.kafka import EventBus
from shared.topics import Topic


class EscalationHandlers:
    """Routes each turn to the bot or to a human."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def on_turn_contextualized(self, event: TurnContextualizedEvent) -> None:
        """Decide the route and publish turn.routed."""
        decision = decide(event.payload)
        await self.bus.publish(
            Topic.TURN_ROUTED,
            event.derive(TurnRoutedEvent, TurnRouted(**dict(event.payload), route=decision)),
        )
