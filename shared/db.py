"""PostgreSQL access: a pool per service and forward-only SQL migrations.

Each service owns a directory of numbered `.sql` files and its own schema. Migrations run at
start-up under an advisory lock, so several replicas starting together apply each file once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg

from shared.settings import PostgresSettings

log = logging.getLogger(__name__)

Pool = asyncpg.Pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(settings: PostgresSettings) -> Pool:
    """Open a connection pool with JSON codecs installed."""
    pool = await asyncpg.create_pool(
        settings.dsn.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        command_timeout=settings.command_timeout_s,
        init=_init_connection,
    )
    assert pool is not None
    return pool


def _read_migrations(directory: Path) -> list[tuple[str, str]]:
    return [(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]


_LEDGER = """
CREATE TABLE IF NOT EXISTS public.cbd_schema_migrations (
    service     text        NOT NULL,
    version     text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)
"""


async def migrate(pool: Pool, service: str, directory: Path) -> list[str]:
    """Apply the service's pending migrations in order; return the versions applied.

    A file that was already applied but has changed since is an error, not a silent skip.
    """
    files = await asyncio.to_thread(_read_migrations, directory)
    applied_now: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('cbd_schema_migrations'))")
        await conn.execute(_LEDGER)
        rows = await conn.fetch(
            "SELECT version, checksum FROM public.cbd_schema_migrations WHERE service = $1",
            service,
        )
        done: dict[str, Any] = {r["version"]: r["checksum"] for r in rows}
        for version, sql in files:
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise RuntimeError(
                        f"migration {service}/{version} changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO public.cbd_schema_migrations (service, version, checksum) "
                "VALUES ($1, $2, $3)",
                service,
                version,
                checksum,
            )
            applied_now.append(version)
    if applied_now:
        log.info("applied migrations for %s: %s", service, ", ".join(applied_now))
    return applied_now
