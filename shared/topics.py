"""Every Kafka topic the platform uses, named once.

Every event type is published on the topic of the same name (`turn.received` on
`turn.received`), so a publisher passes only the event and `Topic.for_event` finds the topic:
the two cannot disagree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class _Typed(Protocol):
    @property
    def event_type(self) -> str: ...


class Topic(StrEnum):
    """Logical topic names; `KafkaSettings.topic()` adds the deployment's prefix."""

    TURN_RECEIVED = "turn.received"
    TURN_ANALYZED = "turn.analyzed"
    TURN_CONTEXTUALIZED = "turn.contextualized"
    TURN_ROUTED = "turn.routed"
    REPLY_DELTA = "reply.delta"
    REPLY_GENERATED = "reply.generated"
    ASSIST_SUGGESTED = "assist.suggested"
    FEEDBACK_RECEIVED = "feedback.received"
    CUSTOMER_ERASED = "customer.erased"
    CONVERSATION_CLOSED = "conversation.closed"
    REVIEW_SUBMITTED = "review.submitted"
    DEAD_LETTER = "deadletter"

    @classmethod
    def for_event(cls, event: _Typed) -> Topic:
        """The topic an event of this type is published on; ValueError for an unknown type."""
        return cls(event.event_type)


# Audit taps every topic, the dead-letter topic included: a poison message is evidence too.
ALL_TOPICS: tuple[Topic, ...] = tuple(Topic)
