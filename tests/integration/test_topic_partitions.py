"""Topics the broker creates by itself and topics the services create have one partition
count, so a conversation keeps its partition whichever client re-created a lost topic."""

from __future__ import annotations

import secrets

import pytest
from aiokafka import AIOKafkaProducer

from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.topics import Topic

pytestmark = pytest.mark.integration


async def test_auto_created_and_service_created_topics_have_the_same_partitions(
    stack_env: dict[str, str],
) -> None:
    servers = stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"]
    settings = KafkaSettings(
        bootstrap_servers=servers,
        partitions=int(stack_env["CBD_KAFKA_PARTITIONS"]),
        topic_prefix=f"it-{secrets.token_hex(4)}.",
    )
    await ensure_topics(settings, (Topic.TURN_RECEIVED,))
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        # A publish to a topic nobody created: the broker creates it on the metadata request.
        auto = f"it-auto-{secrets.token_hex(4)}"
        await producer.send_and_wait(auto, b"x", key=b"conversation")
        by_service = await producer.partitions_for(settings.topic(Topic.TURN_RECEIVED))
        by_broker = await producer.partitions_for(auto)
    finally:
        await producer.stop()
    assert len(by_service) == len(by_broker) == settings.partitions
