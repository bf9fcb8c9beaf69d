"""Ingest service subscribers: replies on their way back to the customer."""

from __future__ import annotations

from functools import cached_property

from prometheus_client import Histogram

from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.delivery import FRAME_BUFFER_TEMPLATE, Fanout
from services.ingest.intake import ENDED_TEMPLATE
from services.ingest.ownership import OWNER_TEMPLATE
from services.ingest.replay import PENDING_TEMPLATE, TurnReplay
from services.ingest.shown import SHOWN_TEMPLATE, LastShown
from shared.erasure import ERASURES, RedisReceipts, Subject, conversation_keys, delete_keys
from shared.events import (
    AssistSuggestedEvent,
    ConversationClosedEvent,
    CustomerErasedEvent,
    ReplyDeltaEvent,
    ReplyGeneratedEvent,
    utcnow,
)
from shared.metrics import LATENCY_BUCKETS

TURN_REPLY_SECONDS = Histogram(
    "cbd_turn_reply_seconds",
    "From the customer's message reaching ingest to its complete reply leaving it.",
    ["channel", "author"],
    buckets=LATENCY_BUCKETS,
)


class IngestHandlers:
    """Turns reply events into frames for the customer's channel."""

    def __init__(
        self,
        fanout: Fanout,
        key_prefix: str,
        channels: ChannelReplies | None = None,
        survey: MessagingSurvey | None = None,
        replay: TurnReplay | None = None,
        shown: LastShown | None = None,
    ) -> None:
        self.fanout = fanout
        self.key_prefix = key_prefix
        self.channels = channels
        self.survey = survey
        self.replay = replay
        self.shown = shown

    @cached_property
    def receipts(self) -> RedisReceipts:
        """Erasure receipts beside the frame buffers they guard (made on first use)."""
        return RedisReceipts(self.fanout.redis, self.key_prefix)

    async def on_reply_delta(self, event: ReplyDeltaEvent) -> None:
        """Stream a slice of a reply still being written."""
        delta = event.payload
        frame: dict[str, object] = {
            "type": "delta",
            "turn_id": str(delta.turn_id),
            "reply_id": str(delta.reply_id),
            "seq": delta.seq,
            "text": delta.text,
        }
        if delta.withdrawn:
            frame["withdrawn"] = True
        await self.fanout.publish(
            event.conversation_id,
            frame,
            late=self.receipts.check(Subject.of(event)),
            store="ingest.frames",
        )

    async def on_reply_generated(self, event: ReplyGeneratedEvent) -> None:
        """Deliver a complete reply."""
        reply = event.payload
        if reply.turn_received_at is not None:
            TURN_REPLY_SECONDS.labels(event.channel.value, reply.author.value).observe(
                max(0.0, (utcnow() - reply.turn_received_at).total_seconds())
            )
        if self.channels is not None:
            # A provider failure raises here, so the reply event is retried, not lost.
            await self.channels.deliver(event)
        await self.fanout.publish(
            event.conversation_id,
            {
                "type": "reply",
                "turn_id": str(reply.turn_id),
                "reply_id": str(reply.reply_id),
                "author": reply.author.value,
                "text": reply.text,
                "flags": reply.flags,
            },
            # A redelivered reply event (ingest killed before committing) shows nothing twice,
            # nor does the reply to a replayed turn: its reply id is derived from the turn's.
            once=f"reply:{reply.reply_id}",
            # Nor is a reply to a customer erased meanwhile kept in the conversation's buffer.
            late=self.receipts.check(Subject.of(event)),
            store="ingest.frames",
        )
        if self.shown is not None:
            await self.shown.record(event.conversation_id, reply.reply_id)
        if self.replay is not None:
            # After the delivery: a turn settled but not delivered would be lost for good.
            await self.replay.answered(event.conversation_id, reply.turn_id)

    async def on_assist_suggested(self, event: AssistSuggestedEvent) -> None:
        """A person holds the conversation and has suggestions for this turn: it arrived.

        Unless the turn was also answered (the handoff notice): then that reply settles it.
        The two travel on different topics, and a broker that loses its log can keep the
        suggestions and lose the notice; settling on the suggestions would lose the notice
        for good.
        """
        if self.replay is not None and not event.payload.replied:
            await self.replay.answered(event.conversation_id, event.payload.turn_id)

    async def on_conversation_closed(self, event: ConversationClosedEvent) -> None:
        """A closed SMS or WhatsApp conversation: ask its customer the closing question."""
        if self.survey is not None:
            # A provider failure raises here, so the close is retried, not lost.
            await self.survey.ask(event)

    async def on_customer_erased(self, event: CustomerErasedEvent) -> None:
        """Forget the erased customer's message-id claims, buffered frames, ownership and
        unanswered turns.

        The receipts go first, so a reply still in flight is not buffered again.
        """
        await self.receipts.record(event)
        patterns = conversation_keys(
            event,
            self.key_prefix,
            [
                "cmid:{conversation}:*",
                FRAME_BUFFER_TEMPLATE,
                OWNER_TEMPLATE,
                ENDED_TEMPLATE,
                PENDING_TEMPLATE + ":*",
                SHOWN_TEMPLATE,
            ],
        )
        await delete_keys(self.fanout.redis, patterns)
        if self.channels is not None:
            await self.channels.erase(event)
        ERASURES.inc()
