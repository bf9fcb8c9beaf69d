"""A consumer group standing past the end of a partition's log (a broker back without its
log, a commit that raced the restart) reads the new log from its start, on the real broker;
and the checks looping on a real consumer stop when cancelled.
"""

from __future__ import annotations

import secrets
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from shared.lag import measure
from shared.rewind import REWINDS, rewind_past_end
from tests.kit import stops_when_cancelled

pytestmark = pytest.mark.integration


async def poll(consumer: AIOKafkaConsumer, seconds: float) -> list[bytes]:
    """Every value fetched within `seconds`."""
    values: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            values += [r.value for r in records if r.value is not None]
    return values


async def one_partition(servers: str, prefix: str, values: list[bytes]) -> TopicPartition:
    """A new one-partition topic holding `values`."""
    topic = f"{prefix}-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    return TopicPartition(topic, 0)


async def assigned(servers: str, group: str, tp: TopicPartition) -> AIOKafkaConsumer:
    """A started consumer of `group`, assigned `tp`, committing only when told to."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    consumer.assign([tp])
    return consumer


async def test_a_group_past_the_end_is_rewound_and_one_at_the_end_is_not(
    stack_env: dict[str, str],
) -> None:
    servers = stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"]
    tp = await one_partition(servers, "it-rewind", [b"r0", b"r1", b"r2"])

    stale, current = f"it-stale-{secrets.token_hex(4)}", f"it-current-{secrets.token_hex(4)}"
    for group, offset in ((stale, 1000), (current, 3)):
        # Where the old log ended (1000), and where this log ends (3).
        committer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group)
        await committer.start()
        try:
            committer.assign([tp])
            await committer.commit({tp: OffsetAndMetadata(offset, "")})
        finally:
            await committer.stop()

    before = REWINDS.labels("it", stale, tp.topic)._value.get()
    for group, expected in ((stale, [b"r0", b"r1", b"r2"]), (current, [])):
        consumer = await assigned(servers, group, tp)
        try:
            # The broker answers a fetch past the end with nothing, not OFFSET_OUT_OF_RANGE,
            # so the client's own reset never happens: without the check, nothing is read.
            assert await poll(consumer, 1.5) == []
            moved = await rewind_past_end("it", group, consumer)
            assert moved == ([tp] if expected else [])
            assert await poll(consumer, 1.5) == expected
        finally:
            await consumer.stop()
    assert REWINDS.labels("it", stale, tp.topic)._value.get() == before + 1


async def test_the_checks_on_a_real_consumer_stop_when_cancelled(
    stack_env: dict[str, str],
) -> None:
    """aiokafka's `position()` and `committed()` answer at once for a consumer that has
    fetched: the checks looping on them must still honour every cancellation."""
    servers = stack_env["CBD_KAFKA_BOOTSTRAP_SERVERS"]
    tp = await one_partition(servers, "it-cancel", [b"r0"])
    group = f"it-cancel-{secrets.token_hex(4)}"
    consumer = await assigned(servers, group, tp)
    try:
        assert await poll(consumer, 1.0) == [b"r0"]
        await consumer.commit()
        assert consumer.highwater(tp) == 1
        assert await stops_when_cancelled(lambda: rewind_past_end("it", group, consumer)) == 0
        assert await stops_when_cancelled(lambda: measure(group, consumer)) == 0
    finally:
        await consumer.stop()
