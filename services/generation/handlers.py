"""Generation service subscribers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from prometheus_client import Counter

from services.generation.assist import assist_messages, coaching_tips
from services.generation.fence import OwnershipFence
from services.generation.llm import ChatClient, LLMUnavailable
from services.generation.prompt import FALLBACK_REPLY, build_messages, handoff_notice
from services.generation.settings import GenerationSettings
from shared.events import (
    AgentAssist,
    AssistSuggestedEvent,
    ReplyDelta,
    ReplyDeltaEvent,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteTarget,
    TurnRoutedEvent,
    utcnow,
)
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)

MAX_PENDING_ASSISTS = 8

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
        self._last_suggestion: dict[str, float] = {}
        # Assist runs beside the consumer, one LLM call at a time, so suggestions for agents
        # never hold up replies to customers queued behind them on the same partition.
        self._assist_slot = asyncio.Semaphore(1)
        self._assist_tasks: set[asyncio.Task[None]] = set()

    async def _schedule_assist(self, event: TurnRoutedEvent) -> None:
        if len(self._assist_tasks) >= MAX_PENDING_ASSISTS:
            # Backlogged: coaching tips now, no suggestion, rather than stale help later.
            await self._publish_assist(event, [])
            return
        task = asyncio.create_task(self._assist(event), name="agent-assist")
        self._assist_tasks.add(task)
        task.add_done_callback(self._assist_done)

    def _assist_done(self, task: asyncio.Task[None]) -> None:
        self._assist_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent assist failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the agent-assist work in progress."""
        while self._assist_tasks:
            await asyncio.gather(*list(self._assist_tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel pending agent assist: it is best-effort help, not worth delaying a stop."""
        for task in list(self._assist_tasks):
            task.cancel()
        await self.drain()

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
            if handoff is None or handoff.new:
                notice = handoff_notice(handoff.eta_minutes if handoff else None)
                await self._publish_reply(event, reply_id, Role.SYSTEM, notice, ["handoff"])
                REPLIES.labels("handoff").inc()
            else:
                # A person has this conversation: they answer, the bot stays quiet.
                REPLIES.labels("silent_human_owns").inc()
            await self._schedule_assist(event)
            return
        if not await self._bot_may_speak(event):
            REPLIES.labels("suppressed").inc()
            return
        await self._answer(event, reply_id)

    def _wants_suggestion(self, event: TurnRoutedEvent) -> bool:
        """Whether to spend an LLM call on a suggestion for this turn.

        The LLM also answers customers; a burst of messages in a conversation a person holds
        must not queue a suggestion per message ahead of them.
        """
        if not self.settings.assist_suggestions:
            return False
        age = (utcnow() - event.payload.message.received_at).total_seconds()
        if age > self.settings.assist_max_age_s:
            return False
        now = time.monotonic()
        last = self._last_suggestion.get(event.conversation_id)
        if last is not None and now - last < self.settings.assist_min_interval_s:
            return False
        self._last_suggestion[event.conversation_id] = now
        if len(self._last_suggestion) > 10_000:
            self._last_suggestion.pop(next(iter(self._last_suggestion)))
        return True

    async def _assist(self, event: TurnRoutedEvent) -> None:
        """Suggest a reply and coaching tips to the person handling the conversation."""
        turn = event.payload
        suggestions: list[str] = []
        if not self._wants_suggestion(event):
            await self._publish_assist(event, suggestions)
            return
        try:
            async with self._assist_slot:
                text = "".join(
                    [
                        piece
                        async for piece in self.llm.stream(
                            assist_messages(turn),
                            max_tokens=self.settings.assist_max_tokens,
                            temperature=self.settings.temperature,
                            top_p=self.settings.top_p,
                        )
                    ]
                ).strip()
            if text:
                suggestions.append(text)
        except LLMUnavailable as exc:
            # Tips alone still help; the agent writes the reply.
            log.warning("no suggested reply for the agent: %s", exc)
        await self._publish_assist(event, suggestions)

    async def _publish_assist(self, event: TurnRoutedEvent, suggestions: list[str]) -> None:
        turn = event.payload
        await self.bus.publish(
            Topic.ASSIST_SUGGESTED,
            event.derive(
                AssistSuggestedEvent,
                AgentAssist(
                    turn_id=turn.message.turn_id,
                    suggestions=suggestions,
                    tips=coaching_tips(turn),
                    model=self.llm.model if suggestions else None,
                ),
            ),
        )

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
