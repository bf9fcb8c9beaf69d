"""A real Redis restart under memory: the hot context is gone, and PostgreSQL brings it back.

The test runs its own Redis server (the session's is shared by every other test) and restarts
it without persistence, as a crashed cache node would come back: empty.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cbd.procs import free_port, tcp_open
from cbd.stack import redis_server_binary
from services.memory.context import ContextAssembler
from services.memory.customers import CustomerStore, TurnFacts
from services.memory.extraction import RuleExtractor
from services.memory.turns import StoredTurn, TurnStore
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.events import (
    Channel,
    CustomerMessage,
    EmotionAnalysis,
    EmotionLabel,
    Role,
    TurnReceived,
    TurnReceivedEvent,
    utcnow,
)
from shared.service import redis_client

pytestmark = pytest.mark.integration


class OwnRedis:
    """A throw-away redis-server that can be killed and started again, empty."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not tcp_open(self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


async def test_memory_keeps_working_across_a_redis_restart(
    own_redis: OwnRedis, memory_pool: db.Pool
) -> None:
    # The client the services use (shared.service), with its reconnecting retries.
    redis = redis_client(f"redis://127.0.0.1:{own_redis.port}/0")
    embedder = MiniLmEmbedder()
    turns = TurnStore(memory_pool, redis, key_prefix="t:", keep=4, ttl_s=60)
    customers = CustomerStore(memory_pool, redis, embedder, key_prefix="t:")
    known, phone = f"cust-{uuid.uuid4().hex[:6]}", "phone:447700900555"
    conversation = f"conv-{uuid.uuid4().hex[:6]}"
    await customers.link(known, phone)
    assert await customers.resolve(phone) == known
    event = TurnReceivedEvent.create(
        conversation_id=conversation,
        customer_id=known,
        channel=Channel.SMS,
        payload=TurnReceived(
            message=CustomerMessage(turn_id=uuid.uuid4(), text="hi", received_at=utcnow())
        ),
    )
    start = utcnow()
    for i, role in enumerate((Role.CUSTOMER, Role.BOT, Role.CUSTOMER)):
        stored = StoredTurn(uuid.uuid4(), role, f"turn {i}", start + timedelta(seconds=i))
        await turns.record(event, stored)
    text = "I prefer eco-friendly products"
    facts = TurnFacts(
        customer_id=known,
        conversation_id=conversation,
        turn_id=uuid.uuid4(),
        at=utcnow(),
        emotion=EmotionAnalysis(
            label=EmotionLabel.NEUTRAL,
            scores={EmotionLabel.NEUTRAL: 1.0},
            sentiment=0.0,
            intensity=0.1,
            model="test",
        ),
    )
    await customers.learn(facts, RuleExtractor().extract(text))
    assert (await turns.recent(conversation))[1] == "cache"

    own_redis.kill()
    own_redis.start()
    assert await redis.dbsize() == 0, "the cache came back empty"

    # The same calls, now answered from PostgreSQL, and the cache filled again.
    assert await customers.resolve(phone) == known
    recent, source = await turns.recent(conversation)
    assert source == "database"
    assert [t.text for t in recent] == ["turn 0", "turn 1", "turn 2"]
    assert (await turns.recent(conversation))[1] == "cache"
    assembler = ContextAssembler(memory_pool)
    rows = await assembler.fetch(known, "next", embedder.embed(["any water bottles?"])[0])
    context = assembler.build(rows, recent=recent, source=source, now=utcnow())
    assert "Prefers eco-friendly products" in [m.text for m in context.memories]
    await redis.aclose()
