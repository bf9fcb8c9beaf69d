"""The embedded broker is durable and supervised: kill -9 it, it comes back with its data.

tansu keeps topics, records and committed offsets in S3 on the embedded SeaweedFS server, so
after a SIGKILL and a restart a consumer group resumes exactly at its committed offset.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cbd.procs import tcp_open
from cbd.stack import EmbeddedStack, StackPorts
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """Servers of their own with the broker on S3 (the session's broker keeps it in memory)."""
    servers = EmbeddedStack(
        tmp_path_factory.mktemp("durable"),
        ports=StackPorts.random(),
        durable=False,
        with_llm=False,
        broker_storage="s3",
    )
    servers.start()
    yield servers
    servers.stop()


@pytest.fixture
def kafka(stack: EmbeddedStack) -> KafkaSettings:
    """Settings for the durable broker, with a topic prefix of this test's own."""
    return KafkaSettings(
        bootstrap_servers=stack.env()["CBD_KAFKA_BOOTSTRAP_SERVERS"],
        topic_prefix=f"it-{secrets.token_hex(4)}.",
    )


async def test_broker_killed_comes_back_with_topics_records_and_committed_offsets(
    stack: EmbeddedStack, kafka: KafkaSettings
) -> None:
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
