"""The embedded broker is durable and supervised: kill -9 it, it comes back with its data.

tansu keeps topics, records and committed offsets in S3 on the embedded SeaweedFS server, so
after a SIGKILL and a restart a consumer group resumes exactly at its committed offset.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cbd.procs import tcp_open
from cbd.runtime import Platform
from cbd.stack import EmbeddedStack
from shared.settings import KafkaSettings

pytestmark = pytest.mark.integration


async def consume(
    kafka: KafkaSettings, topic: str, group: str, count: int, *, commit: bool
) -> list[str]:
    """Up to `count` values from `topic` in consumer group `group` (20 s at most)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    values: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=count - len(values))
            for records in batches.values():
                values += [r.value.decode() for r in records if r.value is not None]
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return values


@pytest.fixture
def stack(_platform: Platform, stack_env: dict[str, str]) -> EmbeddedStack:
    """The session's embedded servers, started."""
    return _platform.stack


async def test_broker_killed_comes_back_with_topics_records_and_committed_offsets(
    stack: EmbeddedStack, isolated_kafka: KafkaSettings
) -> None:
    kafka = isolated_kafka
    topic = kafka.topic_prefix + "durable"
    group = f"it-durable-{secrets.token_hex(3)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False, acks="all"
    )
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()
    assert await consume(kafka, topic, group, 10, commit=True) == [f"m{i}" for i in range(10)]

    broker = stack.server("kafka")
    broker.signal(9)
    await asyncio.to_thread(broker.proc.wait, 10)  # type: ignore[union-attr]
    assert not tcp_open(stack.ports.kafka)
    # What `make run`'s supervisor does every 0.2 s.
    assert stack.restart_exited() == [broker.name]
    await asyncio.to_thread(broker.wait_ready, 15)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()
    # The group resumes at its committed offset: nothing lost, nothing read twice.
    assert await consume(kafka, topic, group, 10, commit=True) == [f"m{i}" for i in range(10, 20)]
