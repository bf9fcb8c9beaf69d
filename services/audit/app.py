"""Audit service: the ledger and the care loop on FastStream, the Review page and API, /metrics,
/livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from fastapi import FastAPI

from services.audit import care, handlers
from services.audit.ledger import Ledger
from services.audit.review_api import REFUSALS, page_router, review_router
from services.audit.settings import AuditSettings
from shared import db
from shared.service import Infra, ServiceSpec, build_app

Settings = AuditSettings


def with_own_fetch_wait(cfg: AuditSettings) -> AuditSettings:
    """The settings with audit's own fetch wait (when set) in place of the platform's."""
    if cfg.fetch_max_wait_ms is None:
        return cfg
    kafka = cfg.kafka.model_copy(update={"fetch_max_wait_ms": cfg.fetch_max_wait_ms})
    return cfg.model_copy(update={"kafka": kafka})


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    """Build the audit service."""
    cfg = with_own_fetch_wait(settings or AuditSettings())

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        eraser = None
        if cfg.eraser_dsn is not None:
            eraser = await db.create_pool(cfg.postgres.model_copy(update={"dsn": cfg.eraser_dsn}))
            stack.push_async_callback(eraser.close)
        ledger = Ledger(infra.require_pg(), cfg.chain_key.get_secret_value(), eraser)
        handlers.register(infra.broker, cfg.kafka, handlers.AuditHandlers(ledger))
        await care.wire(infra, stack, cfg.care)

    return build_app(
        ServiceSpec(
            name="audit",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            migrations=Path(__file__).parent / "migrations",
            routers=[page_router(), review_router()],
            refusals=REFUSALS,
        )
    )
