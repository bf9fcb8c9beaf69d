"""Memory service subscribers."""

from __future__ import annotations

from services.memory.turns import StoredTurn, TurnStore
from shared.events import (
    ConversationContext,
    ReplyGeneratedEvent,
    Role,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
)
from shared.kafka import EventBus
from shared.topics import Topic


class MemoryHandlers:
    """Records every turn and attaches the conversation so far to each new one."""

    def __init__(self, bus: EventBus, store: TurnStore, keep: int) -> None:
        self.bus = bus
        self.store = store
        self.keep = keep

    async def on_turn_analyzed(self, event: TurnAnalyzedEvent) -> None:
        """Store the customer's turn and publish it with its recent history."""
        message = event.payload.message
        history, source = await self.store.recent(event.conversation_id)
        # On redelivery the turn may already be in the history: it is this turn, not context.
        history = [
            t
            for t in history
            if not (
                t.role is Role.CUSTOMER and t.at == message.received_at and t.text == message.text
            )
        ]
        await self.store.record(
            event,
            StoredTurn(
                turn_key=message.turn_id,
                role=Role.CUSTOMER,
                text=message.text,
                occurred_at=message.received_at,
                emotion=event.payload.emotion.model_dump(
                    mode="json", include={"label", "sentiment", "intensity", "degraded"}
                ),
            ),
        )
        context = ConversationContext(
            recent_turns=history[-self.keep :] if self.keep else [],
            source=source,
        )
        await self.bus.publish(
            Topic.TURN_CONTEXTUALIZED,
            event.derive(
                TurnContextualizedEvent,
                TurnContextualized(**dict(event.payload), context=context),
            ),
        )

    async def on_reply_generated(self, event: ReplyGeneratedEvent) -> None:
        """Store a bot, agent or system reply as a turn of the conversation."""
        reply = event.payload
        await self.store.record(
            event,
            StoredTurn(
                turn_key=reply.reply_id,
                role=reply.author,
                text=reply.text,
                occurred_at=event.occurred_at,
                in_reply_to=reply.turn_id,
            ),
        )
