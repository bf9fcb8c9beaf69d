"""Every Kafka topic the platform uses, named once."""

from enum import StrEnum


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


# Audit taps every topic, the dead-letter topic included: a poison message is evidence too.
ALL_TOPICS: tuple[Topic, ...] = tuple(Topic)
