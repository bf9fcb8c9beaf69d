"""Generation service subscribers."""

from __future__ import annotations

import logging
import time
import uuid

from prometheus_client import Counter

from services.generation.fence import OwnershipFence
from services.generation.llm import ChatClient, LLMUnavailable
from services.generation.prompt import FALLBACK_REPLY, build_messages, handoff_notice
from services.generation.settings import GenerationSettings
from shared.events import (
    ReplyDelta,
    ReplyDeltaEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteTarget,
    TurnRoutedEvent,
)
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)

REPLIES = Counter("cbd_replies_total", "Replies published, by kind.", ["kind"])


class GenerationHandlers:
    """Answers bot-routed turns from the LLM and tells human-routed customers help is coming."""

    def __init__(
        self,
        bus: EventBus,
        llm: ChatClient,
        settings: GenerationSettings,
        fence: OwnershipFence | None = None,
    ) -> None:
        self.bus = bus
        self.llm = llm
        self.settings = settings
        self.fence = fence

    async def _bot_may_speak(self, event: TurnRoutedEvent) -> bool:
        if self.fence is None:
            return True
        return await self.fence.bot_may_speak(event.conversation_id, event.payload.route.epoch)

    async def on_turn_routed(self, event: TurnRoutedEvent) -> None:
        """Generate (or decline to generate) the reply for one turn."""
        turn = event.payload
        # Same turn, same reply id: a redelivered turn overwrites nothing downstream.
        reply_id = uuid.uuid5(event.event_id, "reply")
        if turn.route.target is RouteTarget.HUMAN:
            handoff = turn.route.handoff
            if handoff is not None and not handoff.new:
                # A person has this conversation: they answer, the bot stays quiet.
                REPLIES.labels("silent_human_owns").inc()
                return
            notice = handoff_notice(handoff.eta_minutes if handoff else None)
            await self._publish_reply(event, reply_id, Role.SYSTEM, notice, ["handoff"])
            REPLIES.labels("handoff").inc()
            return
        if not await self._bot_may_speak(event):
            REPLIES.labels("suppressed").inc()
            return
        await self._answer(event, reply_id)

    async def _answer(self, event: TurnRoutedEvent, reply_id: uuid.UUID) -> None:
        """Stream the LLM's reply to the customer, or the caring fallback when it fails."""
        turn = event.payload
        started = time.perf_counter()
        parts: list[str] = []
        pending: list[str] = []
        seq = 0
        last_flush = started
        ttft_ms: float | None = None
        flush_s = self.settings.delta_flush_ms / 1000

        async def flush(*, confirm: bool = False) -> None:
            nonlocal seq, last_flush, pending
            if not pending:
                return
            delta = ReplyDelta(
                turn_id=turn.message.turn_id, reply_id=reply_id, seq=seq, text="".join(pending)
            )
            await self.bus.publish(
                Topic.REPLY_DELTA,
                event.derive(ReplyDeltaEvent, delta, part=f":{seq}"),
                confirm=confirm,
            )
            seq += 1
            pending = []
            last_flush = time.perf_counter()

        flags: list[str] = []
        try:
            async for text in self.llm.stream(
                build_messages(turn),
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
            ):
                if ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
                parts.append(text)
                pending.append(text)
                if time.perf_counter() - last_flush >= flush_s:
                    if not await self._bot_may_speak(event):
                        REPLIES.labels("suppressed").inc()
                        return
                    await flush()
            # Acknowledged, so the final reply is not published ahead of the last slice.
            await flush(confirm=True)
        except LLMUnavailable as exc:
            log.warning("LLM unavailable, sending the fallback reply: %s", exc)
            flags = ["llm_fallback", "needs_human", exc.kind]
        if not await self._bot_may_speak(event):
            # A person took the conversation while the bot was writing: they answer it.
            REPLIES.labels("suppressed").inc()
            return
        reply = "".join(parts).strip()
        if not flags and not reply:
            flags = ["llm_fallback", "needs_human", "empty_completion"]
        if flags:
            reply = FALLBACK_REPLY
            REPLIES.labels("fallback").inc()
        else:
            REPLIES.labels("llm").inc()
        await self._publish_reply(
            event,
            reply_id,
            Role.BOT,
            reply,
            flags,
            model=self.llm.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=ttft_ms,
            tokens=len(parts),
        )

    async def _publish_reply(
        self,
        event: TurnRoutedEvent,
        reply_id: uuid.UUID,
        author: Role,
        text: str,
        flags: list[str],
        *,
        model: str | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        tokens: int | None = None,
    ) -> None:
        reply = ReplyGenerated(
            turn_id=event.payload.message.turn_id,
            reply_id=reply_id,
            author=author,
            text=text,
            turn_received_at=event.payload.message.received_at,
            flags=flags,
            model=model,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens=tokens,
        )
        await self.bus.publish(Topic.REPLY_GENERATED, event.derive(ReplyGeneratedEvent, reply))
