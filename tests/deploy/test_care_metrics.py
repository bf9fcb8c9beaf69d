"""The metrics added for the care dashboard: CSAT from audit, emotion mix and sentiment."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from services.audit import handlers as audit
from services.audit.ledger import Record
from services.emotion.handlers import SENTIMENT, polarity
from shared.events import Channel, Feedback, FeedbackReceivedEvent


class FakeLedger:
    """Appends once per (topic, partition, offset), as the real ledger deduplicates."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, int, int]] = set()

    async def append(self, record: Record) -> bool:
        key = (record.topic, record.partition, record.offset)
        new = key not in self.seen
        self.seen.add(key)
        return new


def rating_count(rating: int, channel: str = "web", source: str = "customer") -> float:
    value: Any = audit.FEEDBACK.labels(str(rating), channel, source)._value.get()
    return float(value)


def feedback(rating: int) -> bytes:
    event = FeedbackReceivedEvent.create(
        conversation_id="conv-1",
        customer_id="cust-1",
        channel=Channel.WEB,
        payload=Feedback(rating=rating),
    )
    return event.model_dump_json().encode()


async def test_each_rating_is_counted_once_redeliveries_and_other_topics_are_not() -> None:
    handlers = audit.AuditHandlers(FakeLedger())  # type: ignore[arg-type]
    before = rating_count(5)
    body = feedback(5)
    await handlers.on_any_event(Record("feedback.received", 0, 1, body))
    await handlers.on_any_event(Record("feedback.received", 0, 1, body))  # redelivered
    await handlers.on_any_event(Record("turn.received", 0, 1, body))  # not the feedback topic
    assert rating_count(5) == before + 1


async def test_the_topic_prefix_is_honoured() -> None:
    handlers = audit.AuditHandlers(FakeLedger(), feedback_topic="prod.feedback.received")  # type: ignore[arg-type]
    before = rating_count(2)
    await handlers.on_any_event(Record("feedback.received", 0, 7, feedback(2)))
    await handlers.on_any_event(Record("prod.feedback.received", 0, 7, feedback(2)))
    assert rating_count(2) == before + 1


def test_a_malformed_rating_is_kept_but_not_counted() -> None:
    assert (
        audit.count_feedback(b'{"event_type": "feedback.received", "payload": {"rating": 9}}')
        is False
    )
    assert audit.count_feedback(b"\xff") is False
    assert audit.count_feedback(feedback(4)) is True


def test_sentiment_polarity_has_a_neutral_band() -> None:
    assert [polarity(s) for s in (-0.6, -0.05, 0.0, 0.05, 0.4)] == [
        "negative",
        "neutral",
        "neutral",
        "neutral",
        "positive",
    ]


def test_sentiment_summary_keeps_its_sum_for_the_mean() -> None:
    # A histogram with negative buckets would drop _sum; the mean on the dashboard needs it.
    SENTIMENT.observe(-0.5)
    assert b"cbd_emotion_sentiment_sum" in generate_latest()
