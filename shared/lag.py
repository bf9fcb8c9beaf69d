"""Consumer lag, measured by each service for the partitions it owns, exported on /metrics.

Lag is what SREs scale and alert on: messages on a partition that the consumer group has not
committed yet. It is computed from the consumer's own view, not from the broker's ListOffsets:
the embedded broker answers ListOffsets(latest) wrongly, while the high-water mark that every
fetch response carries is right on both it and Apache Kafka (docs/architecture.md).

    lag = high-water mark (from the last fetch) - committed offset of the group

A background task refreshes the numbers every few seconds (the committed offset is a round
trip to the group coordinator, too slow to make on every scrape); the Prometheus collector
serves the latest snapshot, so partitions that moved to another replica drop out instead of
leaving stale series behind. Each replica exports only its own partitions, so `sum by (group,
topic)` over all replicas is the group's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.background import running

log = logging.getLogger(__name__)

LAG_METRIC = "cbd_consumer_lag"
REFRESH_ERRORS = Counter(
    "cbd_consumer_lag_errors_total",
    "Lag refreshes that failed for a consumer (coordinator unreachable, rebalance).",
    ["service", "group"],
)


class TopicPartitionLike(Protocol):
    """What aiokafka's TopicPartition offers."""

    topic: str
    partition: int


class LagSource(Protocol):
    """The part of aiokafka's AIOKafkaConsumer that lag needs."""

    def assignment(self) -> Iterable[Any]:
        """The partitions this consumer owns now."""

    def highwater(self, partition: Any) -> int | None:
        """The partition's high-water mark as of the last fetch, or None before one."""

    async def committed(self, partition: Any) -> int | None:
        """The group's committed offset for the partition, or None if it never committed."""

    async def position(self, partition: Any) -> int:
        """The offset of the next record this consumer will fetch."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition's lag for one consumer group."""

    group: str
    topic: str
    partition: int
    lag: int


async def measure(group: str, consumer: LagSource, timeout_s: float = 2.0) -> list[PartitionLag]:
    """The lag of every partition `consumer` owns; partitions not fetched yet are skipped."""
    out: list[PartitionLag] = []
    for tp in sorted(consumer.assignment(), key=lambda t: (t.topic, t.partition)):
        high = consumer.highwater(tp)
        if high is None:
            continue  # no fetch answered yet: no high-water mark to measure against
        # asyncio.timeout, not wait_for, which on Python 3.11 can swallow the cancellation
        # that stops the loop calling this (see `shared.rewind`).
        async with asyncio.timeout(timeout_s):
            committed = await consumer.committed(tp)
        if committed is None:
            # The group never committed here; it reads from where the consumer stands.
            async with asyncio.timeout(timeout_s):
                committed = await consumer.position(tp)
        out.append(PartitionLag(group, tp.topic, tp.partition, max(0, high - committed)))
    return out


class LagCollector(Collector):
    """Serves the latest lag snapshot of every service in this process."""

    def __init__(self) -> None:
        self._snapshots: dict[str, list[PartitionLag]] = {}

    def update(self, service: str, lags: list[PartitionLag]) -> None:
        """Replace a service's snapshot (dropping partitions it no longer owns)."""
        self._snapshots[service] = lags

    def forget(self, service: str) -> None:
        """Drop a service's series, e.g. when it stops consuming."""
        self._snapshots.pop(service, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge family: lag per service, group, topic and partition."""
        family = GaugeMetricFamily(
            LAG_METRIC,
            "Messages on a partition not yet committed by the consumer group "
            "(high-water mark of the last fetch minus committed offset).",
            labels=["service", "group", "topic", "partition"],
        )
        for service, lags in list(self._snapshots.items()):
            for p in lags:
                family.add_metric([service, p.group, p.topic, str(p.partition)], p.lag)
        yield family


COLLECTOR = LagCollector()
REGISTRY.register(COLLECTOR)


def consumers_of(broker: Any) -> list[tuple[str, LagSource]]:
    """(group id, started aiokafka consumer) for each of a FastStream broker's subscribers."""
    found: list[tuple[str, LagSource]] = []
    for sub in broker.subscribers:
        consumer = getattr(sub, "consumer", None)
        group = getattr(sub, "group_id", None)
        if consumer is not None and group:
            found.append((group, consumer))
    return found


async def refresh(service: str, broker: Any, collector: LagCollector = COLLECTOR) -> None:
    """Measure every consumer of `broker` once and publish the snapshot."""
    lags: list[PartitionLag] = []
    for group, consumer in consumers_of(broker):
        try:
            lags.extend(await measure(group, consumer))
        except Exception as exc:
            # A rebalance or a coordinator hiccup: skip this round for the group, keep going.
            REFRESH_ERRORS.labels(service, group).inc()
            log.debug("lag refresh failed for %s: %r", group, exc)
    collector.update(service, lags)


@contextlib.asynccontextmanager
async def exporting(
    service: str, broker: Any, interval_s: float = 5.0, collector: LagCollector = COLLECTOR
) -> AsyncIterator[None]:
    """Keep `service`'s lag current while the context is open."""

    async def loop() -> None:
        while True:
            started = time.monotonic()
            try:
                await refresh(service, broker, collector)
            except Exception:
                # Lag is for observing; it must never take the service down.
                log.warning("lag refresh failed", exc_info=True)
            await asyncio.sleep(max(0.5, interval_s - (time.monotonic() - started)))

    try:
        async with running(loop(), f"{service}-lag"):
            yield
    finally:
        collector.forget(service)
