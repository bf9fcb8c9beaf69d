"""Generation service subscribers."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from services.generation.actions import COLLEAGUE_CHECK, ActionDesk, TurnActions
from services.generation.assist import coaching_tips
from services.generation.care import CareKit, CareReport, CheckedStream, TurnCheck
from services.generation.compose import compose
from services.generation.fence import OwnershipFence
from services.generation.guardrails import (
    FLAG_GUARDRAIL,
    FLAG_LEAK,
    Guardrails,
    StreamGuard,
    TenantPolicy,
    Verdict,
    whole_sentences,
)
from services.generation.knowledge import KnowledgeBase
from services.generation.playbooks import PlaybookLibrary
from services.generation.prompt import (
    FALLBACK_REPLY,
    PROTECTED_TEXTS,
    SAFE_REPLY,
    STRATEGIES,
    BuiltPrompt,
    PromptBuilder,
    handoff_notice,
)
from services.generation.settings import GenerationSettings, ReplyMode
from services.generation.variants import Variant, assign_variant
from shared.events import (
    AgentAssist,
    AssistSuggestedEvent,
    CareFinding,
    CareVerdict,
    ReplyDelta,
    ReplyDeltaEvent,
    ReplyFlag,
    ReplyGenerated,
    ReplyGeneratedEvent,
    Role,
    RouteTarget,
    RoutingDecision,
    TurnRoutedEvent,
    utcnow,
)
from shared.kafka import EventBus
from shared.llm import ChatClient, ChatMessage, LLMUnavailable, StreamEnd
from shared.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

MAX_PENDING_ASSISTS = 8

REPLIES = Counter("cbd_replies_total", "Replies published, by kind.", ["kind"])
REPLIES_CUT = Counter(
    "cbd_replies_cut_total",
    "LLM drafts the server stopped at the token limit, ended at their last whole sentence.",
)
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

CARE_VERDICTS = Counter(
    "cbd_care_verdicts_total",
    "Bot replies by the care check's verdict (passed, regenerated, composed, unchecked, fallback).",
    ["verdict", "mode"],
)
CARE_DRAFTS = Counter(
    "cbd_care_drafts_total",
    "LLM drafts the care check read, by attempt (first, regenerated) and outcome (passed, "
    "failed): the failure share of first drafts is the model's care quality.",
    ["attempt", "outcome"],
)
CARE_FINDINGS = Counter(
    "cbd_care_findings_total", "Care check findings in LLM drafts, by check.", ["check"]
)
CARE_CHECK_SECONDS = Histogram(
    "cbd_care_check_seconds",
    "Time the care check spent on a reply's first ended sentence before releasing it: what "
    "the check adds to the first streamed text.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)

LLM_FLAGS = {
    flag.value: flag
    for flag in (
        ReplyFlag.CONNECTION,
        ReplyFlag.FIRST_TOKEN_TIMEOUT,
        ReplyFlag.TIMEOUT,
        ReplyFlag.CIRCUIT_OPEN,
    )
}


def handoff_notice_due(route: RoutingDecision) -> bool:
    """Whether a turn routed to a person gets the handoff notice: a new ticket, one nobody
    announced yet, or no ticket at all. Otherwise a person has the conversation and the bot
    stays quiet."""
    handoff = route.handoff
    return handoff is None or handoff.new or handoff.announce


def llm_failure_flag(kind: str) -> ReplyFlag:
    """The reply flag for how the LLM failed (`http_503` and friends are `http_error`)."""
    return LLM_FLAGS.get(kind, ReplyFlag.HTTP_ERROR)


REGENERATE_NOTE = (
    "Your previous draft broke the rules above (it repeated internal instructions). Write a "
    "new reply that only helps with the customer's actual need."
)


def care_regenerate_note(findings: Sequence[CareFinding]) -> str:
    """What the regeneration is told about why its first draft was not sent."""
    reasons = {
        "grounding": "it stated a number, link, date, amount or reference that is not in the "
        "knowledge section, or claimed to have done something nobody did; state only facts "
        "from the knowledge section and never say you checked, changed or refunded anything",
        "tone": "its tone was unkind (hostile, sarcastic, blaming or dismissive); be warm and "
        "respectful",
        "acknowledgement": "it did not first acknowledge how the customer feels; open with "
        "one short sentence that does",
        "relevance": "it did not answer the customer's message; answer what they asked, "
        "using the knowledge section",
        "co_creation": "it did not handle a request that cannot be met: say kindly that it "
        "cannot, and offer the closest alternative from the knowledge section",
        "repetition": "it repeated your previous reply word for word; say it differently and "
        "move the conversation on",
        "leak": "it repeated internal instructions",
        "voice": "it talked about the customer instead of to them, or wrapped the reply in "
        "notes, labels or placeholders; write only the message itself, speaking to the "
        'customer as "you"',
        "language": "it was not in the language the customer wrote in; reply in their language",
    }
    named = [reasons[c] for c in dict.fromkeys(f.check for f in findings)]
    return (
        "Your previous draft was not sent because "
        + "; and ".join(named)
        + ". Write a new reply that only helps with the customer's actual need."
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
    playbooks = PlaybookLibrary.load(settings.playbooks_path)
    prompts = PromptBuilder(
        company=policy.company,
        canary=settings.canary,
        playbooks=playbooks,
        knowledge=knowledge,
        knowledge_top_k=settings.knowledge_top_k,
        knowledge_min_score=settings.knowledge_min_score,
    )
    # The per-turn strategies are instructions too: a reply reading them out is a leak.
    protected = [*PROTECTED_TEXTS, *STRATEGIES.values(), *(p.strategy for p in playbooks.playbooks)]
    rails = Guardrails(settings.canary, protected, policy)
    return prompts, rails


@dataclass(frozen=True)
class _Final:
    """A bot reply ready to publish, with what the care check said about it."""

    text: str
    flags: list[str]
    verdict: CareVerdict
    findings: list[CareFinding] = field(default_factory=list)
    relevance: float | None = None


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
    end: StreamEnd = field(default_factory=StreamEnd)
    """How the LLM's stream ended (cut at the token limit or not)."""


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
        care: CareKit | None = None,
        actions: ActionDesk | None = None,
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
        self.care = care or CareKit.build(settings, prompts.knowledge)
        self.actions = actions
        self._last_suggestion: dict[str, float] = {}
        # Assist runs beside the consumer, one LLM call at a time, so suggestions for agents
        # never hold up replies to customers queued behind them on the same partition.
        self._assist_slot = asyncio.Semaphore(1)
        self._assist_tasks: set[asyncio.Task[None]] = set()

    async def _schedule_assist(self, event: TurnRoutedEvent) -> None:
        if len(self._assist_tasks) >= MAX_PENDING_ASSISTS:
            # Backlogged: coaching tips now, no suggestion, rather than stale help later.
            await self._publish_assist(event, [], [])
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
            if handoff_notice_due(turn.route):
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
        """A whole completion, not streamed to anyone (suggestions, regenerations); one the
        server cut at the token limit ends at its last whole sentence."""
        end = StreamEnd()
        async with aclosing(
            self.llm.stream(
                messages,
                max_tokens=max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
                end=end,
            )
        ) as pieces:
            text = "".join([piece async for piece in pieces])
        if end.cut:
            REPLIES_CUT.inc()
            return whole_sentences(text)
        return text.strip()

    async def _assist(self, event: TurnRoutedEvent) -> None:
        """Draft a reply and coaching tips for the person handling the conversation.

        The same machinery as a bot reply (care prompt, playbook, memory, knowledge,
        guardrails, care check), but the draft goes to the agent with the check's verdict,
        and the agent decides what the customer sees. A draft that leaks the prompt is
        dropped: an agent is never handed the canary.
        """
        turn = event.payload
        suggestions: list[str] = []
        reports: list[CareReport] = []
        if not self._wants_suggestion(event):
            await self._publish_assist(event, suggestions, reports)
            return
        prompt = self.prompts.build(turn, Variant.CARE, assist=True)
        try:
            async with self._assist_slot:
                text = await self._complete(prompt.messages, self.settings.assist_max_tokens)
            verdict = self.rails.check(text)
            if verdict.leak is not None:
                log.warning("dropped a suggestion that leaked the prompt (%s)", verdict.leak)
            elif verdict.text:
                check = self.care.for_turn(turn, prompt)
                report = await asyncio.to_thread(check.whole, verdict.text)
                suggestions.append(verdict.text)
                reports.append(report)
        except LLMUnavailable as exc:
            # Tips alone still help; the agent writes the reply.
            log.warning("no suggested reply for the agent: %s", exc)
        await self._publish_assist(event, suggestions, reports)

    async def _publish_assist(
        self, event: TurnRoutedEvent, suggestions: list[str], reports: Sequence[CareReport]
    ) -> None:
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
                    suggestion_verdicts=[
                        CareVerdict.PASSED if r.passed else CareVerdict.FAILED for r in reports
                    ],
                    suggestion_findings=[list(r.findings) for r in reports],
                    replied=handoff_notice_due(turn.route),
                ),
            ),
        )

    async def _answer(self, event: TurnRoutedEvent, reply_id: uuid.UUID) -> None:
        """Answer the customer in the configured mode; the caring fallback when the LLM fails.

        - `llm_checked`: stream sentence by sentence through the guardrails and the care
          check; a failing draft is regenerated once (not streamed), then composed;
        - `llm`: stream through the guardrails; the care check's findings are recorded;
        - `composed`: no LLM; the reply is composed from knowledge, playbook and strategy.
        """
        started = time.perf_counter()
        variant = self.variant_for(event.conversation_id)
        acted = TurnActions()
        if self.actions is not None:
            acted = await self.actions.for_turn(event.payload, event.customer_id)
        prompt = self.prompts.build(event.payload, variant, facts=acted.facts)
        PROMPT_SECONDS.observe(time.perf_counter() - started)
        mode = self.settings.reply_mode
        check = self.care.for_turn(event.payload, prompt, acted.backing)
        state = _Stream(reply_id=reply_id, started=started, last_flush=started)
        final: _Final | None = None
        try:
            if acted.needs_colleague:
                # A system did not answer: say so and bring in a person, never guess.
                colleague = [ReplyFlag.NEEDS_HUMAN.value, ReplyFlag.ACTION_FAILED.value]
                final = _Final(COLLEAGUE_CHECK, colleague, CareVerdict.COMPOSED)
            elif mode is ReplyMode.COMPOSED:
                final = await self._composed(event, prompt, check, [], [])
            elif mode is ReplyMode.LLM_CHECKED:
                final = await self._checked(event, prompt, check, state)
            else:
                final = await self._unchecked(event, prompt, check, state)
        except LLMUnavailable as exc:
            log.warning("LLM unavailable, sending the fallback reply: %s", exc)
            flags = [ReplyFlag.LLM_FALLBACK, ReplyFlag.NEEDS_HUMAN, llm_failure_flag(exc.kind)]
            final = _Final(FALLBACK_REPLY, [f.value for f in flags], CareVerdict.FALLBACK)
        if final is None or state.suppressed or not await self._bot_may_speak(event):
            # A person took the conversation while the bot was writing: they answer it.
            REPLIES.labels("suppressed").inc()
            await self._withdraw(event, state)
            return
        if final.verdict is CareVerdict.FALLBACK:
            REPLIES.labels("fallback").inc()
        elif final.verdict is CareVerdict.COMPOSED:
            REPLIES.labels("composed").inc()
        else:
            REPLIES.labels("llm").inc()
        CARE_VERDICTS.labels(final.verdict.value, mode.value).inc()
        REPLY_VARIANTS.labels(variant.value).inc()
        await self._publish_reply(
            event,
            reply_id,
            Role.BOT,
            final.text,
            final.flags,
            model=self.llm.model if final.verdict is not CareVerdict.COMPOSED else None,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=state.ttft_ms,
            tokens=state.tokens,
            prompt=prompt,
            final=final,
            actions_used=acted.used,
        )

    async def _unchecked(
        self, event: TurnRoutedEvent, prompt: BuiltPrompt, check: TurnCheck, state: _Stream
    ) -> _Final | None:
        """Mode `llm`: the guardrails act, the care check only reports."""
        guard = self.rails.stream()
        if not await self._pump(event, prompt, state, guard):
            return None
        cut = self._cut(state)
        rest, verdict = guard.finish(cut=cut)
        if rest:
            state.pending.append(rest)
        # Acknowledged, so the final reply is not published ahead of the last slice.
        await self._flush(event, state, confirm=True)
        reply, flags = await self._settle(prompt, verdict)
        if not flags and not reply:
            empty = [ReplyFlag.LLM_FALLBACK, ReplyFlag.NEEDS_HUMAN, ReplyFlag.EMPTY_COMPLETION]
            return _Final(FALLBACK_REPLY, _values(empty), CareVerdict.FALLBACK)
        report = await asyncio.to_thread(check.whole, reply)
        self._count_draft("first", report)
        flags = [*flags, *(f.value for f in report.flags if f.value not in flags)]
        if cut and verdict.leak is None:
            # The streamed draft is the reply, ended early: say so (it may replace the stream).
            flags.append(ReplyFlag.CUT.value)
        return _Final(reply, flags, CareVerdict.UNCHECKED, list(report.findings), report.relevance)

    async def _checked(
        self, event: TurnRoutedEvent, prompt: BuiltPrompt, check: TurnCheck, state: _Stream
    ) -> _Final | None:
        """Mode `llm_checked`: stream what passes, regenerate once, then compose."""
        guard = CheckedStream(self.rails, check)
        if not await self._pump(event, prompt, state, guard):
            return None
        cut = self._cut(state)
        rest, text, report, verdict = await asyncio.to_thread(guard.finish, cut=cut)
        if rest:
            state.pending.append(rest)
        await self._flush(event, state, confirm=True)
        if guard.check_s:
            CARE_CHECK_SECONDS.observe(guard.check_s[0])
        findings = list(report.findings)
        if verdict.leak is not None:
            findings.append(
                CareFinding(check="leak", flag=ReplyFlag.PROMPT_LEAK, detail=verdict.leak)
            )
        self._count_draft("first", report, leaked=verdict.leak is not None)
        if not findings and text:
            flags = [*verdict.flags, *([ReplyFlag.CUT.value] if cut else [])]
            return _Final(text, flags, CareVerdict.PASSED, [], report.relevance)
        empty = not findings and not text
        if empty:
            # Nothing usable came back: nothing to regenerate from, compose.
            return await self._composed(event, prompt, check, [], [ReplyFlag.EMPTY_COMPLETION])
        return await self._regenerate(event, prompt, check, findings)

    async def _regenerate(
        self,
        event: TurnRoutedEvent,
        prompt: BuiltPrompt,
        check: TurnCheck,
        findings: list[CareFinding],
    ) -> _Final:
        """One more draft, told what was wrong, not streamed; composed if it fails too."""
        leaked = any(f.check == "leak" for f in findings)
        log.info(
            "reply failed the care check (%s); regenerating",
            ", ".join(f.flag.value for f in findings),
        )
        note = REGENERATE_NOTE if leaked and len(findings) == 1 else care_regenerate_note(findings)
        messages = [*prompt.messages[:-1], ChatMessage("system", note), prompt.messages[-1]]
        base = [ReplyFlag.GUARDRAIL, ReplyFlag.PROMPT_LEAK] if leaked else []
        base.append(ReplyFlag.CARE_FAILED)
        try:
            again = self.rails.check(await self._complete(messages, self.settings.max_tokens))
        except LLMUnavailable as exc:
            log.warning("no regeneration (%s): composing the reply", exc)
            again = None
        if again is not None and again.leak is None and again.text:
            report = await asyncio.to_thread(check.whole, again.text)
            self._count_draft("regenerated", report)
            if report.passed:
                REPLIES.labels("regenerated").inc()
                # The customer got a sound reply: the leak is on record (prompt_leak,
                # regenerated), but no `guardrail` flag, which would queue the conversation
                # for a person without a word to the customer, whose next turn then gets
                # neither the bot nor a handoff notice.
                kept = [f for f in base if f is not ReplyFlag.GUARDRAIL]
                flags = [*kept, ReplyFlag.REGENERATED, *_first_flags(findings)]
                return _Final(
                    again.text,
                    [*_values(flags), *again.flags],
                    CareVerdict.REGENERATED,
                    findings,
                    report.relevance,
                )
            findings = [*findings, *report.findings]
        elif again is not None:
            self._count_draft("regenerated", CareReport(), leaked=again.leak is not None)
            if again.leak is not None:
                findings = [
                    *findings,
                    CareFinding(check="leak", flag=ReplyFlag.PROMPT_LEAK, detail=again.leak),
                ]
                if not leaked:
                    base[:0] = [ReplyFlag.GUARDRAIL, ReplyFlag.PROMPT_LEAK]
        REPLIES.labels("replaced").inc()
        # The composed reply is sound by construction: the leaks stay on record (prompt_leak,
        # care_failed), but no `guardrail` flag, which would queue the conversation for a
        # person although the customer got a good answer (and, with a small model that leaks
        # now and then, hand off conversations at random).
        base = [f for f in base if f is not ReplyFlag.GUARDRAIL]
        return await self._composed(event, prompt, check, findings, base)

    async def _composed(
        self,
        event: TurnRoutedEvent,
        prompt: BuiltPrompt,
        check: TurnCheck,
        findings: list[CareFinding],
        flags: Sequence[ReplyFlag],
    ) -> _Final:
        """The reply composed without the LLM; `findings` are the failed drafts'."""
        made = compose(
            event.payload,
            prompt.hits,
            prompt.match,
            negative=check.customer_negative,
            previous_reply=check.previous_reply,
        )
        verdict = self.rails.check(made.text)
        text = verdict.text if verdict.leak is None and verdict.text else SAFE_REPLY
        report = await asyncio.to_thread(check.whole, text)
        broken = [f for f in report.findings if f.check != "relevance"]
        if broken:
            # Composed from checked parts, so this is a bug in a part: say so loudly. (Low
            # relevance is expected when the knowledge base has no answer.)
            log.error("a composed reply failed the care check: %s", broken)
        all_flags = [*flags, *_first_flags(findings), *made.flags, *verdict.flags]
        return _Final(
            text,
            list(dict.fromkeys(_values(all_flags))),
            CareVerdict.COMPOSED,
            [*findings, *report.findings],
            report.relevance,
        )

    def _count_draft(self, attempt: str, report: CareReport, *, leaked: bool = False) -> None:
        failed = leaked or not report.passed
        CARE_DRAFTS.labels(attempt, "failed" if failed else "passed").inc()
        for finding in report.findings:
            CARE_FINDINGS.labels(finding.check).inc()
        if leaked:
            CARE_FINDINGS.labels("leak").inc()

    async def _pump(
        self,
        event: TurnRoutedEvent,
        prompt: BuiltPrompt,
        state: _Stream,
        guard: StreamGuard | CheckedStream,
    ) -> bool:
        """Stream the LLM's reply through a guard as deltas; False if a person took over."""
        flush_s = self.settings.delta_flush_ms / 1000
        async with aclosing(
            self.llm.stream(
                prompt.messages,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
                end=state.end,
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
                        return False
                    await self._flush(event, state)
        return True

    @staticmethod
    def _cut(state: _Stream) -> bool:
        """Whether the server cut this reply at the token limit (counted once)."""
        if state.end.cut:
            REPLIES_CUT.inc()
        return state.end.cut

    async def _withdraw(self, event: TurnRoutedEvent, state: _Stream) -> None:
        """Take back the slices already streamed of a reply that will not be finished, so
        the customer is not left with half a sentence above the person's answer."""
        if state.seq == 0:
            return
        delta = ReplyDelta(
            turn_id=event.payload.message.turn_id,
            reply_id=state.reply_id,
            seq=state.seq,
            text="",
            withdrawn=True,
        )
        await self.bus.publish(event.derive(ReplyDeltaEvent, delta, part=f":{state.seq}"))
        state.seq += 1

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
        """Mode `llm`: the final text and flags of a guarded reply; a leaking one is
        regenerated once (not streamed) and, if that fails too, replaced with a safe reply."""
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
            # No `guardrail` flag for a sound regeneration: see `_regenerate`.
            return again.text, [FLAG_LEAK, "regenerated", *again.flags]
        REPLIES.labels("replaced").inc()
        return SAFE_REPLY, [FLAG_GUARDRAIL, FLAG_LEAK, "replaced"]

    async def _publish_reply(
        self,
        event: TurnRoutedEvent,
        reply_id: uuid.UUID,
        author: Role,
        text: str,
        flags: Sequence[str],
        *,
        model: str | None = None,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        tokens: int | None = None,
        prompt: BuiltPrompt | None = None,
        final: _Final | None = None,
        actions_used: Sequence[str] = (),
    ) -> None:
        reply = ReplyGenerated(
            turn_id=event.payload.message.turn_id,
            reply_id=reply_id,
            author=author,
            text=text,
            turn_received_at=event.payload.message.received_at,
            flags=list(flags),
            model=model,
            variant=prompt.variant.value if prompt else None,
            playbook=prompt.playbook if prompt else None,
            knowledge_used=list(prompt.knowledge_used) if prompt else [],
            memories_used=list(prompt.memories_used) if prompt else [],
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            tokens=tokens,
            care_verdict=final.verdict if final else None,
            care_findings=final.findings if final else [],
            relevance=final.relevance if final else None,
            reply_mode=self.settings.reply_mode.value if final else None,
            actions_used=list(actions_used),
        )
        await self.bus.publish(event.derive(ReplyGeneratedEvent, reply))


def _values(flags: Sequence[ReplyFlag | str]) -> list[str]:
    return [f.value if isinstance(f, ReplyFlag) else f for f in flags]


def _first_flags(findings: Sequence[CareFinding]) -> list[ReplyFlag]:
    """Each finding's flag once (leaks are named by the guardrail flags instead)."""
    return list(dict.fromkeys(f.flag for f in findings if f.check != "leak"))
