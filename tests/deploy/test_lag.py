"""Consumer lag on /metrics: measured per owned partition, served from the latest snapshot."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from shared import lag
from shared.settings import KafkaSettings


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    """An aiokafka consumer's lag-relevant answers, set by the test."""

    def __init__(
        self,
        high: dict[TP, int | None],
        committed: dict[TP, int | None],
        position: dict[TP, int] | None = None,
        fail: bool = False,
    ) -> None:
        self.high, self.committed_at, self.positions = high, committed, position or {}
        self.fail = fail

    def assignment(self) -> Iterable[Any]:
        return set(self.high)

    def highwater(self, partition: Any) -> int | None:
        return self.high[partition]

    async def committed(self, partition: Any) -> int | None:
        if self.fail:
            raise TimeoutError("coordinator away")
        return self.committed_at[partition]

    async def position(self, partition: Any) -> int:
        return self.positions[partition]


class FakeSubscriber:
    def __init__(self, group_id: str, consumer: FakeConsumer | None) -> None:
        self.group_id, self.consumer = group_id, consumer


class FakeBroker:
    def __init__(self, *subscribers: FakeSubscriber) -> None:
        self.subscribers = list(subscribers)


async def test_lag_is_highwater_minus_committed_per_partition() -> None:
    a0, a1, a2 = TP("turn.received", 0), TP("turn.received", 1), TP("turn.received", 2)
    consumer = FakeConsumer(
        high={a0: 10, a1: 5, a2: None},
        committed={a0: 7, a1: None, a2: 0},
        position={a1: 2},
    )
    got = await lag.measure("cbd-emotion.turn.received", consumer)
    assert got == [
        lag.PartitionLag("cbd-emotion.turn.received", "turn.received", 0, 3),
        # Never committed: measured from where the consumer stands.
        lag.PartitionLag("cbd-emotion.turn.received", "turn.received", 1, 3),
        # Partition 2 has had no fetch answer yet, so there is nothing to report.
    ]


async def test_collector_serves_the_latest_snapshot_and_drops_moved_partitions() -> None:
    registry = CollectorRegistry()
    collector = lag.LagCollector()
    registry.register(collector)
    tp0, tp1 = TP("turn.routed", 0), TP("turn.routed", 1)
    broker = FakeBroker(
        FakeSubscriber(
            "cbd-generation.turn.routed", FakeConsumer({tp0: 4, tp1: 9}, {tp0: 4, tp1: 1})
        ),
        FakeSubscriber("not-started", None),
    )
    await lag.refresh("generation", broker, collector)
    text = generate_latest(registry).decode()
    assert (
        'cbd_consumer_lag{group="cbd-generation.turn.routed",partition="1",'
        'service="generation",topic="turn.routed"} 8.0'
    ) in text
    assert 'partition="0"' in text
    # Partition 1 moved to another replica in a rebalance: its series goes away.
    broker.subscribers[0].consumer = FakeConsumer({tp0: 6}, {tp0: 6})
    await lag.refresh("generation", broker, collector)
    text = generate_latest(registry).decode()
    assert 'partition="1"' not in text
    collector.forget("generation")
    assert "service=" not in generate_latest(registry).decode()


async def test_a_failing_group_is_counted_and_skipped() -> None:
    collector = lag.LagCollector()
    tp = TP("turn.analyzed", 0)
    broker = FakeBroker(
        FakeSubscriber("cbd-memory.turn.analyzed", FakeConsumer({tp: 3}, {tp: 0}, fail=True)),
        FakeSubscriber("cbd-memory.reply.generated", FakeConsumer({tp: 3}, {tp: 1})),
    )
    before = lag.REFRESH_ERRORS.labels("memory", "cbd-memory.turn.analyzed")._value.get()
    await lag.refresh("memory", broker, collector)
    after = lag.REFRESH_ERRORS.labels("memory", "cbd-memory.turn.analyzed")._value.get()
    assert after == before + 1
    assert [p.group for p in collector._snapshots["memory"]] == ["cbd-memory.reply.generated"]


async def test_exporting_refreshes_until_closed() -> None:
    collector = lag.LagCollector()
    tp = TP("deadletter", 0)
    broker = FakeBroker(FakeSubscriber("cbd-audit", FakeConsumer({tp: 2}, {tp: 0})))
    async with lag.exporting("audit", broker, interval_s=0.5, collector=collector):
        await asyncio.sleep(0.1)
        assert collector._snapshots["audit"] == [lag.PartitionLag("cbd-audit", "deadletter", 0, 2)]
    assert "audit" not in collector._snapshots


@pytest.mark.integration
async def test_lag_against_the_real_broker(isolated_kafka: KafkaSettings) -> None:
    """Five messages, two committed: the real broker's high-water mark gives a lag of three."""
    topic = isolated_kafka.topic_prefix + "lag"
    group = f"lag-{secrets.token_hex(3)}"
    producer = AIOKafkaProducer(bootstrap_servers=isolated_kafka.bootstrap_servers)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=isolated_kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        while len(seen) < 5:
            batch = await consumer.getmany(timeout_ms=1000)
            seen.extend(m.value for msgs in batch.values() for m in msgs if m.value is not None)
        await consumer.commit({TopicPartition(topic, 0): 2})
        measured = await lag.measure(group, consumer)
    finally:
        await consumer.stop()
    # The broker auto-created the topic with several partitions; only partition 0 has data.
    assert measured[0] == lag.PartitionLag(group, topic, 0, 3)
    assert all(p.lag == 0 for p in measured[1:])
