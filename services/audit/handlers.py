"""Audit service subscriber: one consumer over every topic, raw records in."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter

from services.audit.ledger import Ledger, Record
from shared.settings import KafkaSettings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)

RECORDED = Counter("cbd_audit_records_total", "Records appended to the audit ledger.", ["topic"])
DUPLICATES = Counter(
    "cbd_audit_duplicates_total", "Redelivered records audit had already appended.", ["topic"]
)


class AuditHandlers:
    """Appends every record of every topic, malformed ones included, to the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def on_any_event(self, record: Record) -> None:
        """Append one record; a duplicate delivery is counted, not stored twice."""
        if await self.ledger.append(record):
            RECORDED.labels(record.topic).inc()
        else:
            DUPLICATES.labels(record.topic).inc()


def register(broker: KafkaBroker, settings: KafkaSettings, handlers: AuditHandlers) -> None:
    """Subscribe to every platform topic.

    Audit does not validate: it must keep what actually flowed, poison messages too. A
    database failure raises, so the offset stays uncommitted and the record comes back.
    """

    @broker.subscriber(
        *(settings.topic(t) for t in ALL_TOPICS),
        group_id="cbd-audit",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        title="audit:all-topics",
    )
    async def on_any_event(msg: KafkaMessage) -> None:
        raw = msg.raw_message
        if not isinstance(raw, ConsumerRecord):
            raise TypeError("audit consumes one record at a time")
        record = Record(raw.topic, raw.partition, raw.offset, msg.body)
        try:
            await handlers.on_any_event(record)
        except Exception:
            # Redelivery needs a pause, or a database outage becomes a hot loop.
            log.exception("could not append %s; will retry", record)
            await asyncio.sleep(1.0)
            raise

    del on_any_event
