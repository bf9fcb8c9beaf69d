"""A conversation queued by a flagged bot reply: the customer is told at their next turn.

Escalation and generation run as the services do (FastAPI apps with their lifespans) on the
real broker, PostgreSQL and Redis. A bot reply flagged `needs_approval` queues the
conversation without a handoff notice; the customer's next turn used to get silence (the bot
no longer owns the conversation, and the ticket was not new). Now that turn carries the
notice, once.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from pydantic import SecretStr

from services.escalation.app import create_app as escalation_app
from services.escalation.settings import EscalationSettings
from services.generation.app import create_app as generation_app
from services.generation.settings import GenerationSettings
from shared.events import ReplyGenerated, Role
from shared.settings import KafkaSettings, PostgresSettings, RedisSettings
from shared.topics import Topic
from tests.kit import (
    analyzed,
    contextualized,
    db_rows,
    eventually,
    produce,
    read_topic,
    reply_generated,
    serving,
    turn_received,
)

pytestmark = pytest.mark.integration


async def test_the_turn_after_an_approval_reply_gets_the_handoff_notice(
    stack_env: dict[str, str], fresh_db: str
) -> None:
    tag = secrets.token_hex(4)
    kafka = KafkaSettings(
        bootstrap_servers=stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=f"it-{tag}.",
        partitions=1,
    )
    redis = RedisSettings(url=SecretStr(stack_env["CBD_REDIS_URL"]), key_prefix=f"it-{tag}:")
    escalation = escalation_app(
        EscalationSettings(
            kafka=kafka, postgres=PostgresSettings(dsn=SecretStr(fresh_db)), redis=redis
        )
    )
    generation = generation_app(
        GenerationSettings(
            kafka=kafka,
            redis=redis,
            llm_base_url=stack_env["CBD_GENERATION_LLM_BASE_URL"],
            llm_model=stack_env["CBD_GENERATION_LLM_MODEL"],
            # The handoff notice needs no LLM; an agent suggestion would only cost time.
            assist_suggestions=False,
        )
    )
    bootstrap = stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"]
    first = turn_received("Can I get a refund for the broken kettle?")
    conversation = first.conversation_id
    async with serving(escalation, generation):
        # The bot's answer to the first turn promised nothing itself: the guardrail replaced
        # the promise and flagged the reply, as generation does.
        flagged = reply_generated(
            first, "I've passed this request to a colleague who can approve it."
        )
        flagged = flagged.model_copy(
            update={
                "payload": ReplyGenerated(**{**dict(flagged.payload), "flags": ["needs_approval"]})
            }
        )
        await produce(bootstrap, kafka.topic(Topic.REPLY_GENERATED), flagged)

        async def ticket() -> list[Any]:
            return await db_rows(
                fresh_db,
                "SELECT announced_by_event FROM escalation.tickets WHERE conversation_id = $1",
                conversation,
            )

        [row] = await eventually(ticket, what="the approval reply's ticket")
        assert row["announced_by_event"] is None, "nobody has told the customer yet"

        following = contextualized(
            analyzed(
                turn_received("Thanks. Also, when will it arrive?", conversation_id=conversation)
            )
        )
        await produce(bootstrap, kafka.topic(Topic.TURN_CONTEXTUALIZED), following)

        replies = await read_topic(kafka, Topic.REPLY_GENERATED, expect=2, timeout_s=60)
        notices = [
            r
            for r in replies
            if r["conversation_id"] == conversation and "handoff" in r["payload"]["flags"]
        ]
        assert len(notices) == 1, f"one handoff notice expected, got {replies}"
        [notice] = notices
        assert notice["payload"]["author"] == Role.SYSTEM.value
        assert notice["payload"]["turn_id"] == str(following.payload.message.turn_id)
        [row] = await ticket()
        assert row["announced_by_event"] == following.event_id
