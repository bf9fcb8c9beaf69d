"""Generation service subscribers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from services.generation.assist import coaching_tips
from services.generation.fence import OwnershipFence
from services.generation.guardrails import (
    FLAG_GUARDRAIL,
    FLAG_LEAK,
    Guardrails,
    TenantPolicy,
    Verdict,
)
from services.generation.knowledge import KnowledgeBase
from services.generation.llm import ChatClient, ChatMessage, LLMUnavailable
from services.generation.playbooks import PlaybookLibrary
from services.generation.prompt import (
    FALLBACK_REPLY,
    PROTECTED_TEXTS,
    SAFE_REPLY,
    BuiltPrompt,
    PromptBuilder,
    handoff_notice,
)
from services.generation.settings import GenerationSettings
from services.generation.variants import Variant, assign_variant
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
from shared.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

MAX_PENDING_ASSISTS = 8

REPLIES = Counter("cbd_replies_total", "Replies published, by kind.", ["kind"])
REPLY_VARIANTS = Counter(
    "cbd_replies_by_variant_total", "Bot replies by prompt variant (A/B).", ["variant"]
)
PROMPT_SECONDS = Histogram(
    "cbd_generation_prompt_seconds",
    "Time to build a prompt (playbook, knowledge retrieval, memory): the service's own "
    "share of time to first token.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
)
FIRST_DELTA_SECONDS = Histogram(
    "cbd_generation_first_delta_seconds",
    "From a routed turn to its first streamed slice published.",
    buckets=LATENCY_BUCKETS,
)

REGENERATE_NOTE = (
    "Your previous draft broke the rules above (it repeated internal instructions). Write a "
    "new reply that only helps with the customer's actual need."
)


def build_prompting(settings: GenerationSettings) -> tuple[PromptBuilder, Guardrails]:
    """The prompt builder and guardrails for the configured tenant, from the shipped files."""
    policy = TenantPolicy.load(settings.knowledge_dir, settings.tenant)
    knowledge = KnowledgeBase.load(settings.knowledge_dir, settings.tenant)
    if not knowledge.entries:
        log.warning(
            "no knowledge for tenant %r under %s: replies will not be grounded",
            settings.tenant,
            settings.knowledge_dir,
        )
    prompts = PromptBuilder(
        company=policy.company,
        canary=settings.canary,
        playbooks=PlaybookLibrary.load(settings.playbooks_path),
        knowledge=knowledge,
        knowledge_top_k=settings.knowledge_top_k,
        knowledge_min_score=settings.knowledge_min_score,
    )
    rails = Guardrails(settings.canary, PROTECTED_TEXTS, policy)
    return prompts, rails


@dataclass
class _Stream:
    """One reply being streamed: what is waiting to go out and how far it got."""

    reply_id: uuid.UUID
    started: float
    last_flush: float
    pending: list[str] = field(default_factory=list)
    seq: int = 0
    suppressed: bool = False
    tokens: int = 0
    ttft_ms: float | None = None


class GenerationHandlers:
    """Answers bot-routed turns from the LLM and tells human-routed customers help is coming."""

    def __init__(
        self,
        bus: EventBus,
        llm: ChatClient,
        settings: GenerationSettings,
        fence: OwnershipFence | None = None,
        prompts: PromptBuilder | None = None,
        rails: Guardrails | None = None,
    ) -> None:
        self.bus = bus
        self.llm = llm
        self.settings = settings
        self.fence = fence
        if prompts is None or rails is None:
            built_prompts, built_rails = build_prompting(settings)
            prompts, rails = prompts or built_prompts, rails or built_rails
        self.prompts = prompts
        self.rails = rails
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

    def variant_for(self, conversation_id: str) -> Variant:
        """The conversation's prompt variant (baseline or care), stable for its whole life."""
        return assign_variant(
            conversation_id, self.settings.baseline_share, self.settings.variant_salt
        )

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

    async def _complete(self, messages: list[ChatMessage], max_tokens: int) -> str:
        """A whole completion, not streamed to anyone (suggestions, regenerations)."""
        async with aclosing(
            self.llm.stream(
                messages,
                max_tokens=max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
            )
        ) as pieces:
            return "".join([piece async for piece in pieces]).strip()

    async def _assist(self, event: TurnRoutedEvent) -> None:
        """Draft a reply and coaching tips for the person handling the conversation.

        The same machinery as a bot reply (care prompt, playbook, memory, knowledge,
        guardrails), but the draft goes to the agent, who decides what the customer sees.
        """
        turn = event.payload
        suggestions: list[str] = []
        if not self._wants_suggestion(event):
            await self._publish_assist(event, suggestions)
            return
        prompt = self.prompts.build(turn, Variant.CARE, assist=True)
        try:
            async with self._assist_slot:
                text = await self._complete(prompt.messages, self.settings.assist_max_tokens)
            verdict = self.rails.check(text)
            if verdict.leak is not None:
                log.warning("dropped a suggestion that leaked the prompt (%s)", verdict.leak)
            elif verdict.text:
                suggestions.append(verdict.text)
        except LLMUnavailable as exc:
            # Tips alone still help; the agent writes the reply.
            log.warning("no suggested reply for the agent: %s", exc)
        await self._publish_assist(event, suggestions)

    async def _publish_assist(self, event: TurnRoutedEvent, suggestions: list[str]) -> None:
        turn = event.payload
        match = self.prompts.select_playbook(turn)
        await self.bus.publish(
            event.derive(
                AssistSuggestedEvent,
                AgentAssist(
                    turn_id=turn.message.turn_id,
                    suggestions=suggestions,
                    tips=coaching_tips(turn, match.playbook if match else None),
                    model=self.llm.model if suggestions else None,
                ),
            ),
        )

    async def _answer(self, event: TurnRoutedEvent, reply_id: uuid.UUID) -> None:
        """Stream the LLM's reply to the customer, or the caring fallback when it fails."""
        started = time.perf_counter()
        variant = self.variant_for(event.conversation_id)
        prompt = self.prompts.build(event.payload, variant)
        PROMPT_SECONDS.observe(time.perf_counter() - started)
        state = _Stream(reply_id=reply_id, started=started, last_flush=started)
        flags: list[str] = []
        verdict: Verdict | None = None
        try:
            verdict = await self._stream_reply(event, prompt, state)
        except LLMUnavailable as exc:
            log.warning("LLM unavailable, sending the fallback reply: %s", exc)
            flags = ["llm_fallback", "needs_human", exc.kind]
        reply = ""
        if verdict is not None and not flags:
            reply, flags = await self._settle(prompt, verdict)
        if state.suppressed or not await self._bot_may_speak(event):
            # A person took the conversation while the bot was writing: they answer it.
            REPLIES.labels("suppressed").inc()
            return
        if not flags and not reply:
            flags = ["llm_fallback", "needs_human", "empty_completion"]
        if "llm_fallback" in flags:
            reply = FALLBACK_REPLY
            REPLIES.labels("fallback").inc()
        else:
            REPLIES.labels("llm").inc()
        REPLY_VARIANTS.labels(variant.value).inc()
        await self._publish_reply(
            event,
            reply_id,
            Role.BOT,
            reply,
            flags,
            model=self.llm.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=state.ttft_ms,
            tokens=state.tokens,
            prompt=prompt,
        )

    async def _stream_reply(
        self, event: TurnRoutedEvent, prompt: BuiltPrompt, state: _Stream
    ) -> Verdict | None:
        """Stream the guarded reply as deltas; its final verdict (None if suppressed)."""
        guard = self.rails.stream()
        flush_s = self.settings.delta_flush_ms / 1000
        async with aclosing(
            self.llm.stream(
                prompt.messages,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
            )
        ) as pieces:
            async for text in pieces:
                if state.ttft_ms is None:
                    state.ttft_ms = (time.perf_counter() - state.started) * 1000
                state.tokens += 1
                released = guard.feed(text)
                if guard.stopped:
                    break  # the rest is not streamed; the final reply carries the fix
                if released:
                    state.pending.append(released)
                # The first slice goes out at once (time to first token); later ones are
                # batched so a reply is a handful of events, not one per token.
                due = state.seq == 0 or time.perf_counter() - state.last_flush >= flush_s
                if state.pending and due:
                    if not await self._bot_may_speak(event):
                        state.suppressed = True
                        return None
                    await self._flush(event, state)
        rest, verdict = guard.finish()
        if rest:
            state.pending.append(rest)
        # Acknowledged, so the final reply is not published ahead of the last slice.
        await self._flush(event, state, confirm=True)
        return verdict

    async def _flush(
        self, event: TurnRoutedEvent, state: _Stream, *, confirm: bool = False
    ) -> None:
        """Publish the text waiting to go out as one delta."""
        if not state.pending:
            return
        delta = ReplyDelta(
            turn_id=event.payload.message.turn_id,
            reply_id=state.reply_id,
            seq=state.seq,
            text="".join(state.pending),
        )
        await self.bus.publish(
            event.derive(ReplyDeltaEvent, delta, part=f":{state.seq}"),
            confirm=confirm,
        )
        if state.seq == 0:
            FIRST_DELTA_SECONDS.observe(time.perf_counter() - state.started)
        state.seq += 1
        state.pending = []
        state.last_flush = time.perf_counter()

    async def _settle(self, prompt: BuiltPrompt, verdict: Verdict) -> tuple[str, list[str]]:
        """The final text and flags of a checked reply; a leaking one is regenerated once
        (not streamed) and, if that fails too, replaced with a safe reply."""
        if verdict.leak is None:
            return verdict.text, list(verdict.flags)
        log.warning("reply leaked the prompt (%s); regenerating", verdict.leak)
        messages = [
            *prompt.messages[:-1],
            ChatMessage("system", REGENERATE_NOTE),
            prompt.messages[-1],
        ]
        try:
            again = self.rails.check(await self._complete(messages, self.settings.max_tokens))
        except LLMUnavailable:
            again = None
        if again is not None and again.leak is None and again.text:
            REPLIES.labels("regenerated").inc()
            return again.text, [FLAG_GUARDRAIL, FLAG_LEAK, "regenerated", *again.flags]
        REPLIES.labels("replaced").inc()
        return SAFE_REPLY, [FLAG_GUARDRAIL, FLAG_LEAK, "replaced"]

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
        prompt: BuiltPrompt | None = None,
    ) -> None:
        reply = ReplyGenerated(
            turn_id=event.payload.message.turn_id,
            reply_id=reply_id,
            author=author,
            text=text,
            turn_received_at=event.payload.message.received_at,
            flags=flags,
            model=model,
            variant=prompt.variant.value if prompt else None,
            playbook=prompt.playbook if prompt else None,
            knowledge_used=list(prompt.knowledge_used) if prompt else [],
            memories_used=list(prompt.memories_used) if prompt else [],
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens=tokens,
        )
        await self.bus.publish(event.derive(ReplyGeneratedEvent, reply))
