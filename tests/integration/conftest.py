"""Fixtures the integration tests share."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from pydantic import SecretStr

from cbd.crm_standin import create_app as crm_app
from cbd.procs import free_port
from services.escalation.desk import Desk
from shared import db
from shared.embedding import MiniLmEmbedder
from shared.settings import PostgresSettings

ESCALATION_MIGRATIONS = Path(__file__).resolve().parents[2] / "services/escalation/migrations"

MEMORY_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "memory" / "migrations"


@pytest.fixture(scope="session")
def embedder() -> MiniLmEmbedder:
    """The bundled MiniLM embedder, loaded once for every test that reads meaning."""
    return MiniLmEmbedder()


@pytest.fixture
async def memory_pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    """A pool on a brand-new database with memory's schema migrated."""
    pool = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pool, "memory", MEMORY_MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def crm_url() -> Iterator[str]:
    """The stand-in CRM as a real server on a free port, as `make run` starts it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(crm_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/requests", timeout=0.5)
            break
        except httpx.TransportError:
            threading.Event().wait(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
async def desk(fresh_db: str, redis_client: aioredis.Redis) -> AsyncIterator[Desk]:
    """Escalation's desk on a freshly migrated database and its own Redis key prefix."""
    pool = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pool, "escalation", ESCALATION_MIGRATIONS)
    yield Desk(
        pool,
        redis_client,
        key_prefix=f"it-{uuid.uuid4().hex[:6]}:",
        handle_minutes=4,
        agents_on_shift=2,
    )
    await pool.close()
