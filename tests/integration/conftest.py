"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared import db
from shared.settings import PostgresSettings

MEMORY_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "memory" / "migrations"


@pytest.fixture
async def memory_pool(fresh_db: str) -> AsyncIterator[db.Pool]:
    """A pool on a brand-new database with memory's schema migrated."""
    pool = await db.create_pool(PostgresSettings(dsn=SecretStr(fresh_db)))
    await db.migrate(pool, "memory", MEMORY_MIGRATIONS)
    yield pool
    await pool.close()
