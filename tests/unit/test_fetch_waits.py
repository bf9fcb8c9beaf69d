"""Consumers off the reply path poll the broker less eagerly than the stages customers wait on."""

from __future__ import annotations

from services.audit.app import with_own_fetch_wait
from services.audit.settings import AuditSettings
from shared.events import CustomerErasedEvent, TurnReceivedEvent
from shared.kafka import EventBus, make_broker
from shared.service import Infra
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topic


async def _noop(event: object) -> None:
    del event


def test_background_topics_use_the_background_fetch_wait() -> None:
    kafka = KafkaSettings(fetch_max_wait_ms=100, background_fetch_max_wait_ms=700)
    settings = ServiceSettings(kafka=kafka)
    broker = make_broker(kafka, client_id="cbd-emotion")
    infra = Infra("emotion", settings, broker, EventBus(broker, kafka, "emotion"))
    infra.subscribe(Topic.TURN_RECEIVED, TurnReceivedEvent, _noop)
    infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, _noop)
    waits = {
        s.group_id: s._connection_args["fetch_max_wait_ms"]  # type: ignore[attr-defined]
        for s in broker.subscribers
    }
    assert waits == {
        "cbd-emotion.turn.received": 100,
        "cbd-emotion.customer.erased": 700,
    }


def test_audit_polls_with_its_own_fetch_wait() -> None:
    kafka = KafkaSettings(fetch_max_wait_ms=100)
    # Off the reply path, audit waits longer by default (erasure receipts, not the wait,
    # keep in-flight records from outliving an erasure); an operator may set its own.
    assert with_own_fetch_wait(AuditSettings(kafka=kafka)).kafka.fetch_max_wait_ms == 500
    own = with_own_fetch_wait(AuditSettings(kafka=kafka, fetch_max_wait_ms=450))
    assert own.kafka.fetch_max_wait_ms == 450
    # Unset: the platform-wide wait, as before.
    unset = with_own_fetch_wait(AuditSettings(kafka=kafka, fetch_max_wait_ms=None))
    assert unset.kafka.fetch_max_wait_ms == 100
