"""Memory service subscribers."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Histogram

from services.memory.context import ContextAssembler
from services.memory.crm import CrmSync
from services.memory.customers import CustomerStore, TurnFacts
from services.memory.extraction import LlmExtractor, RuleExtractor
from services.memory.turns import StoredTurn, TurnStore, with_similarity
from shared.embedding import Embedder
from shared.erasure import LateRecord, Subject
from shared.events import (
    ReplyGeneratedEvent,
    Role,
    TurnAnalyzedEvent,
    TurnContextualized,
    TurnContextualizedEvent,
    utcnow,
)
from shared.intent import IntentReader
from shared.kafka import EventBus

log = logging.getLogger(__name__)

REPLY_WAITS = Counter(
    "cbd_memory_reply_waits_total",
    "Turns naming the reply their customer saw, by whether it was already stored, stored "
    "while the turn waited, or still missing when the wait ran out (context without it).",
    ["outcome"],
)
REPLY_POLL_S = 0.02
"""How often a waiting turn looks for the reply: a reply is one short transaction away."""

MEMORIES_LEARNED = Counter(
    "cbd_memory_memories_learned_total", "Memories written or updated, by kind", ["kind"]
)
ISSUES_SEEN = Counter(
    "cbd_memory_issues_total", "Customer issues raised or resolved, by event", ["event"]
)
CONTEXT_SECONDS = Histogram(
    "cbd_memory_context_seconds",
    "Time to assemble a turn's context (embedding, query, budget)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CONTEXT_MEMORIES = Histogram(
    "cbd_memory_context_memories",
    "Memories carried by a turn's context",
    buckets=(0, 1, 2, 3, 5, 8),
)


class MemoryHandlers:
    """Records every turn, learns from customer messages and attaches context to each turn."""

    def __init__(
        self,
        bus: EventBus,
        turns: TurnStore,
        customers: CustomerStore,
        assembler: ContextAssembler,
        embedder: Embedder,
        extractor: RuleExtractor,
        *,
        keep: int,
        llm_extractor: LlmExtractor | None = None,
        intents: IntentReader | None = None,
        crm: CrmSync | None = None,
        reply_wait_s: float = 2.0,
    ) -> None:
        self.bus = bus
        self.turns = turns
        self.customers = customers
        self.assembler = assembler
        self.embedder = embedder
        self.extractor = extractor
        self.llm_extractor = llm_extractor
        self.keep = keep
        self.intents = intents or IntentReader(embedder)
        self.crm = crm
        self.reply_wait_s = reply_wait_s

    async def on_turn_analyzed(self, event: TurnAnalyzedEvent) -> None:
        """Resolve the customer, store and learn from the turn, publish it with its context.

        A turn of a customer erased while it was in flight is stored nowhere and goes no
        further (counted in `cbd_erasure_late_records_total`).
        """
        try:
            await self._contextualize(event)
        except LateRecord:
            log.info("a turn of an erased customer arrived after the erasure; dropped")

    async def _contextualize(self, event: TurnAnalyzedEvent) -> None:
        started = time.perf_counter()
        message = event.payload.message
        # Everything below is read and written within the tenant the edge verified.
        tenant = event.tenant
        identity = event.customer_id
        customer_id = await self.customers.resolve(
            identity, tenant=tenant, subject=Subject.of(event)
        )
        if customer_id != event.customer_id:
            # From here on the turn belongs to the customer, whichever channel it came from.
            event = event.model_copy(update={"customer_id": customer_id})
        await self._await_reply(event)
        history, source = await self.turns.recent(event.conversation_id, tenant=tenant)
        meanings = await self.turns.meanings(event.conversation_id, tenant=tenant)
        # On redelivery the turn may already be in the history: it is this turn, not context.
        history = [
            t
            for t in history
            if not (
                t.role is Role.CUSTOMER and t.at == message.received_at and t.text == message.text
            )
        ]
        # The turn's one embedding: recall, intent, issues and the loop check all read it.
        vector = self.embedder.embed([message.text])[0]
        stored = await self.turns.record(
            event,
            StoredTurn(
                turn_key=message.turn_id,
                role=Role.CUSTOMER,
                text=message.text,
                occurred_at=message.received_at,
                emotion=event.payload.emotion.model_dump(
                    mode="json", include={"label", "sentiment", "intensity", "degraded"}
                ),
                meaning=vector,
            ),
            subject=Subject.of(event, identity),
        )
        history = with_similarity(history, meanings, vector)
        if self.crm is not None:
            # Before the context is read, so a due sync's tier and history are in it.
            await self.crm.before_turn(customer_id, tenant=tenant)
        allowed = await self.customers.personalisation_allowed(customer_id, tenant=tenant)
        if stored:
            await self._learn(event, customer_id, vector, allowed)
        rows = await self.assembler.fetch(
            customer_id, event.conversation_id, vector, recall=allowed, tenant=tenant
        )
        context = self.assembler.build(
            rows,
            recent=history[-self.keep :] if self.keep else [],
            source=source,
            now=utcnow(),
        )
        CONTEXT_SECONDS.observe(time.perf_counter() - started)
        CONTEXT_MEMORIES.observe(len(context.memories))
        await self.bus.publish(
            event.derive(
                TurnContextualizedEvent,
                TurnContextualized(
                    **dict(event.payload),
                    context=context,
                    intent=self.intents.read(message.text, vector).contract(),
                ),
            ),
        )

    async def _learn(
        self,
        event: TurnAnalyzedEvent,
        customer_id: str,
        vector: npt.NDArray[np.float32],
        allowed: bool,
    ) -> None:
        message = event.payload.message
        facts = TurnFacts(
            customer_id=customer_id,
            conversation_id=event.conversation_id,
            turn_id=message.turn_id,
            at=message.received_at,
            emotion=event.payload.emotion,
            channel=str(event.channel),
            tenant=event.tenant,
        )
        await self.customers.fold_mood(facts)
        found = self.extractor.extract(
            message.text,
            sentiment=event.payload.emotion.sentiment,
            vector=vector,
        )
        if self.llm_extractor is not None and allowed:
            known = {m.slot for m in found.memories}
            extra = await self.llm_extractor.extract(message.text)
            found.memories.extend(m for m in extra if m.slot not in known)
        if not found:
            return
        await self.customers.learn(facts, found, allow_memories=allowed)
        for memory in found.memories if allowed else []:
            MEMORIES_LEARNED.labels(memory.kind.value).inc()
        for _ in found.raised:
            ISSUES_SEEN.labels("raised").inc()
        for _ in found.resolved:
            ISSUES_SEEN.labels("resolved").inc()

    async def _await_reply(self, event: TurnAnalyzedEvent) -> None:
        """Wait, up to `reply_wait_s`, until the reply the customer saw before this message
        is stored, so the context has it (the reply reaches memory in one hop, the message
        in two, and a quick customer can overtake it)."""
        reply_id = event.payload.after_reply_id
        if reply_id is None:
            return
        deadline = time.monotonic() + self.reply_wait_s
        outcome = "stored"
        while not await self.turns.has(reply_id, tenant=event.tenant):
            if time.monotonic() >= deadline:
                outcome = "timeout"
                log.warning("the reply before this turn is not stored yet; context without it")
                break
            outcome = "waited"
            await asyncio.sleep(REPLY_POLL_S)
        REPLY_WAITS.labels(outcome).inc()

    async def on_reply_generated(self, event: ReplyGeneratedEvent) -> None:
        """Store a bot, agent or system reply as a turn of the conversation (not when its
        customer was erased while it was in flight)."""
        reply = event.payload
        try:
            await self.turns.record(
                event,
                StoredTurn(
                    turn_key=reply.reply_id,
                    role=reply.author,
                    text=reply.text,
                    occurred_at=event.occurred_at,
                    in_reply_to=reply.turn_id,
                ),
            )
        except LateRecord:
            log.info("a reply to an erased customer arrived after the erasure; not stored")
