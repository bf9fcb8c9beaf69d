"""Audit service subscriber: one consumer over every topic, raw records in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter
from pydantic import ValidationError

from services.audit.ledger import Ledger, Record
from shared.erasure import ERASURES
from shared.events import CustomerErasedEvent, FeedbackReceivedEvent
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

# Records per batch: a fetch's worth under load, and a bounded transaction.
BATCH_MAX_RECORDS = 500

RECORDED = Counter("cbd_audit_records_total", "Records appended to the audit ledger.", ["topic"])
DUPLICATES = Counter(
    "cbd_audit_duplicates_total", "Redelivered records audit had already appended.", ["topic"]
)
# CSAT for the care dashboard. Audit sees every feedback event exactly once (duplicates are
# recognised by the ledger), so counting here is free of redelivery double counts.
FEEDBACK = Counter(
    "cbd_feedback_ratings_total",
    "Satisfaction ratings received (1-5), by rating, channel and source (customer, reviewer).",
    ["rating", "channel", "source"],
)


def count_feedback(body: bytes) -> bool:
    """Count a feedback.received record's rating; False when it is not a valid one."""
    try:
        event = FeedbackReceivedEvent.model_validate_json(body)
    except ValidationError:
        return False  # kept in the ledger all the same; a bad rating is not a rating
    FEEDBACK.labels(str(event.payload.rating), event.channel.value, event.payload.source).inc()
    return True


class AuditHandlers:
    """Appends every record of every topic, malformed ones included, to the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        feedback_topic: str = Topic.FEEDBACK_RECEIVED.value,
        erasure_topic: str = Topic.CUSTOMER_ERASED.value,
    ) -> None:
        self.ledger = ledger
        self.feedback_topic = feedback_topic
        self.erasure_topic = erasure_topic

    async def on_any_event(self, record: Record) -> None:
        """Append one record; a duplicate delivery is counted, not stored twice."""
        if await self.ledger.append(record):
            RECORDED.labels(record.topic).inc()
            if record.topic == self.feedback_topic:
                count_feedback(record.body)
        else:
            DUPLICATES.labels(record.topic).inc()
        if record.topic == self.erasure_topic:
            # Also on a redelivery: the append may have landed and the erasure not.
            await self.erase(record.body)

    async def on_records(self, records: Sequence[Record]) -> None:
        """Append a batch as `on_any_event` appends each record, in one transaction per run.

        An erasure record ends a run and is carried out before the records after it are
        appended, as one by one, so a record that follows an erasure is not erased with it.
        """
        run: list[Record] = []
        for record in records:
            run.append(record)
            if record.topic == self.erasure_topic:
                await self._append_run(run)
                run = []
        await self._append_run(run)

    async def _append_run(self, run: list[Record]) -> None:
        if not run:
            return
        appended = await self.ledger.append_many(run)
        for record, new in zip(run, appended, strict=True):
            if new:
                RECORDED.labels(record.topic).inc()
                if record.topic == self.feedback_topic:
                    count_feedback(record.body)
            else:
                DUPLICATES.labels(record.topic).inc()
        last = run[-1]
        if last.topic == self.erasure_topic:
            # Also on a redelivery: the append may have landed and the erasure not.
            await self.erase(last.body)

    async def erase(self, body: bytes) -> None:
        """Carry out a customer.erased event, the erasure record's own content included."""
        try:
            event = CustomerErasedEvent.model_validate_json(body)
        except ValidationError:
            log.error("customer.erased record that is not one; kept, nothing erased")
            return
        erased = event.payload
        count = await self.ledger.erase(
            [erased.erased_customer_id, *erased.identities],
            erased.conversation_ids,
            tenant=event.tenant,
            erased_at=erased.requested_at,
        )
        ERASURES.inc()
        log.info("erased %d audit records for one customer", count)


def register(broker: KafkaBroker, settings: KafkaSettings, handlers: AuditHandlers) -> None:
    """Subscribe to every platform topic.

    Audit does not validate: it must keep what actually flowed, poison messages too. A
    database failure raises, so the offset stays uncommitted and the record comes back.
    """
    handlers.feedback_topic = settings.topic(Topic.FEEDBACK_RECEIVED)
    handlers.erasure_topic = settings.topic(Topic.CUSTOMER_ERASED)

    # One batch per fetch: one transaction and one offset commit for all the records a fetch
    # brought, instead of one of each per record (see "CPU per turn" in docs/architecture.md).
    # NACK_ON_ERROR rewinds every partition of a failed batch to its earliest record.
    @broker.subscriber(
        *(settings.topic(t) for t in ALL_TOPICS),
        group_id="cbd-audit",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        batch=True,
        max_records=BATCH_MAX_RECORDS,
        batch_timeout_ms=settings.fetch_max_wait_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        title="audit:all-topics",
    )
    async def on_any_event(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        if isinstance(raw, ConsumerRecord):
            raw = (raw,)
        records = [Record(r.topic, r.partition, r.offset, r.value or b"") for r in raw]
        try:
            await handlers.on_records(records)
        except Exception:
            # Redelivery needs a pause, or a database outage becomes a hot loop.
            log.exception("could not append %d records; will retry", len(records))
            await asyncio.sleep(1.0)
            raise

    del on_any_event
