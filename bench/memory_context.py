"""Context assembly at scale: 100,000 customers and 1,000,000 memories in PostgreSQL.

Starts PostgreSQL and Redis from the embedded stack, loads the memory schema with
  - 100,000 customers, 200,000 past conversations (each with its mood) and 20,000 open issues;
  - 1,000,000 memories, 10 per customer, written in an order that scatters each customer's
    rows across the table as years of real traffic would. Filler memories reuse 1,000 random
    unit vectors (embedding a million texts would take over an hour here); the query work
    per customer is the same as with distinct vectors;
  - the 160 customers of the labelled recall set (services/memory/data/recall.jsonl) with
    their real memories and real MiniLM embeddings, plus 12 recent turns each in Redis,
then times the memory service's own assembly path for their messages: recent turns from Redis,
the message's embedding, the one-query fetch (profile, top-k memories by pgvector cosine,
open issues, past moods) and the token-budget build. Prints p50/p99 for the whole and for
each part, the recall@3 the database path gives, and PostgreSQL's size on disk.

    make bench
    .venv/bin/python -m bench.memory_context --customers 100000 --per-customer 10 --runs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from pydantic import SecretStr

from bench.turn_latency import summary
from cbd.stack import EmbeddedStack, StackPorts
from services.memory.context import ContextAssembler
from services.memory.evaluation import load_cases
from services.memory.turns import TurnStore
from shared import db
from shared.embedding import DIMENSIONS, MiniLmEmbedder, to_pgvector
from shared.events import DEFAULT_TENANT, HistoryTurn, Role, utcnow
from shared.settings import PostgresSettings

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "memory" / "migrations"
KINDS = ("preference", "fact", "constraint", "contact")


async def load(pool: db.Pool, customers: int, per_customer: int) -> float:
    """Bulk-load the filler customers; return seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(7)
    base = rng.normal(size=(1000, DIMENSIONS)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE base_vectors (i int PRIMARY KEY, v text)")
        await conn.executemany(
            "INSERT INTO base_vectors VALUES ($1, $2)",
            [(i, to_pgvector(v)) for i, v in enumerate(base)],
        )
        await conn.execute(
            """
            INSERT INTO memory.customers (customer_id, name, tier, consent)
            SELECT 'c' || g, 'Customer ' || g,
                   (ARRAY['bronze', 'silver', 'gold'])[1 + g % 3], '{"personalisation": true}'
            FROM generate_series(1, $1) g
            """,
            customers,
        )
        await conn.execute(
            """
            INSERT INTO memory.identities (identity, customer_id, kind)
            SELECT 'c' || g, 'c' || g, 'customer' FROM generate_series(1, $1) g
            """,
            customers,
        )
        await conn.execute(
            """
            INSERT INTO memory.conversations (conversation_id, customer_id, channel, started_at,
                last_activity_at)
            SELECT 'v' || g, 'c' || (1 + g % $1::int), 'web', now() - (g % 90) * interval '1 day',
                   now() - (g % 90) * interval '1 day'
            FROM generate_series(1, 2 * $1::int) g
            """,
            customers,
        )
        await conn.execute(
            """
            INSERT INTO memory.conversation_moods (conversation_id, customer_id, turns,
                sentiment_sum, min_sentiment, last_sentiment, last_label, labels, started_at,
                updated_at)
            SELECT conversation_id, customer_id, 4, -0.8, -0.6, -0.1, 'frustration',
                   '{"frustration": 2, "neutral": 2}', started_at, last_activity_at
            FROM memory.conversations
            """
        )
        await conn.execute(
            """
            INSERT INTO memory.issues (issue_id, customer_id, conversation_id, category, summary)
            SELECT gen_random_uuid(), 'c' || (1 + g * 5), 'v' || (1 + g * 5), 'delivery_lost',
                   'My parcel never arrived'
            FROM generate_series(0, $1::int / 5 - 1) g
            """,
            customers,
        )
        # Row g belongs to customer g % customers: each customer's rows end up far apart.
        await conn.execute(
            """
            INSERT INTO memory.memories (memory_id, customer_id, kind, slot, text, confidence,
                extractor, embedding)
            SELECT gen_random_uuid(), 'c' || (1 + g % $1::int), ($3::text[])[1 + g % 4],
                   'filler:' || (g / $1::int), 'Filler memory number ' || g, 0.8, 'rules',
                   b.v::vector
            FROM generate_series(0, $1::int * $2::int - 1) g JOIN base_vectors b ON b.i = g % 1000
            """,
            customers,
            per_customer,
            list(KINDS),
        )
        # Settle like a running system: no bulk load still being flushed, no autovacuum about
        # to wake up on a fresh million rows, in the middle of the measurement.
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    return time.perf_counter() - started


async def load_probes(pool: db.Pool, turns: TurnStore, embedder: MiniLmEmbedder) -> None:
    """The recall set's customers, with real memories and a conversation in Redis."""
    async with pool.acquire() as conn:
        for case in load_cases():
            customer = f"probe-{case.case_id}"
            await conn.execute("INSERT INTO memory.customers (customer_id) VALUES ($1)", customer)
            vectors = embedder.embed(case.memories)
            await conn.executemany(
                """
                INSERT INTO memory.memories (memory_id, customer_id, kind, slot, text,
                    confidence, extractor, embedding)
                VALUES ($1, $2, 'fact', $3, $4, 0.9, 'rules', $5::text::vector)
                """,
                [
                    (uuid.uuid4(), customer, f"probe:{i}", text, to_pgvector(vectors[i]))
                    for i, text in enumerate(case.memories)
                ],
            )
    now = utcnow()
    for case in load_cases():
        key = turns._key(DEFAULT_TENANT, f"probe-conv-{case.case_id}")
        history = [
            HistoryTurn(role=Role.CUSTOMER if i % 2 else Role.BOT, text=f"turn {i} " * 12, at=now)
            for i in range(12)
        ]
        await turns.redis.delete(key)
        await turns.redis.rpush(key, *[h.model_dump_json() for h in history])


async def run(args: argparse.Namespace) -> None:
    """Start the servers, load, measure, print."""
    with tempfile.TemporaryDirectory(prefix="cbd-bench-memory-") as tmp:
        stack = EmbeddedStack(
            Path(tmp),
            ports=StackPorts.random(),
            broker_storage="memory",
            durable=False,
            with_llm=False,
        )
        stack.start()
        try:
            await measure(stack, args)
        finally:
            stack.stop()


async def measure(stack: EmbeddedStack, args: argparse.Namespace) -> None:
    """Load the data and time the assembly path."""
    env = stack.env()
    pool = await db.create_pool(
        PostgresSettings(dsn=SecretStr(env["CBD_PG_DSN"]), pool_max_size=2, command_timeout_s=1800)
    )
    redis = aioredis.from_url(env["CBD_REDIS_URL"], decode_responses=True)
    try:
        await db.migrate(pool, "memory", MIGRATIONS)
        print(
            f"loading {args.customers:,} customers, {args.customers * args.per_customer:,} memories"
        )
        seconds = await load(pool, args.customers, args.per_customer)
        embedder = MiniLmEmbedder()
        turns = TurnStore(pool, redis, key_prefix="bench:", keep=12, ttl_s=3600)
        await load_probes(pool, turns, embedder)
        memories = await pool.fetchval("SELECT count(*) FROM memory.memories")
        size = await pool.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"loaded in {seconds:.0f} s: {memories:,} memories, database {size}")

        assembler = ContextAssembler(pool)
        cases = load_cases()
        rng = random.Random(11)
        total, t_redis, t_embed, t_query, t_build = [], [], [], [], []
        hits = 0
        for i in range(args.warmup + args.runs):
            case = cases[i % len(cases)] if i < len(cases) else rng.choice(cases)
            t0 = time.perf_counter()
            recent, source = await turns.recent(f"probe-conv-{case.case_id}")
            t1 = time.perf_counter()
            vector = embedder.embed([case.query])[0]
            t2 = time.perf_counter()
            rows = await assembler.fetch(f"probe-{case.case_id}", "current", vector)
            t3 = time.perf_counter()
            context = assembler.build(rows, recent=recent, source=source, now=utcnow())
            t4 = time.perf_counter()
            if i < len(cases):
                top3 = {m.text for m in context.memories[:3]}
                hits += bool(top3 & {case.memories[r] for r in case.relevant})
            if i >= args.warmup:
                total.append(t4 - t0)
                t_redis.append(t1 - t0)
                t_embed.append(t2 - t1)
                t_query.append(t3 - t2)
                t_build.append(t4 - t3)
        print(summary("context assembly, whole", total))
        print(summary("  recent turns (Redis)", t_redis))
        print(summary("  message embedding", t_embed))
        print(summary("  one query (PostgreSQL)", t_query))
        print(summary("  budget and build", t_build))
        print(
            f"recall@3 through the database, {len(cases)} labelled cases: {hits / len(cases):.3f}"
        )
    finally:
        await redis.aclose()
        await pool.close()


def main() -> None:
    """Entry point for `python -m bench.memory_context`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--per-customer", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
