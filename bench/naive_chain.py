"""The simplest thing doing the platform's job: an empty chain of aiokafka relays.

Each relay is its own process: it consumes one topic in a consumer group, commits after each
message (at-least-once, like the services), and publishes the same bytes on the next topic with
an awaited send; no validation, no work. The capacity benchmark runs it on the same broker, with
the same partitions and fetch wait, beside the platform, so the ratio between the two is the
platform's own cost.

    python -m bench.naive_chain relay --bootstrap 127.0.0.1:9092 --source t0 --sink t1
"""

from __future__ import annotations

import argparse
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def relay(bootstrap: str, source: str, sink: str, fetch_max_wait_ms: int) -> None:
    """Forward every record from `source` to `sink`, one at a time, until cancelled."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=f"naive-{source}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    await consumer.start()
    try:
        async for record in consumer:
            await producer.send_and_wait(sink, record.value, key=record.key)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    """`relay`: run one relay until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("relay")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--fetch-max-wait-ms", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(relay(args.bootstrap, args.source, args.sink, args.fetch_max_wait_ms))


if __name__ == "__main__":
    main()
