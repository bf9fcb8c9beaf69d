"""Audit service: FastStream subscriber plus /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from starlette.applications import Starlette

from services.audit import care, handlers
from services.audit.ledger import Ledger
from services.audit.settings import AuditSettings
from shared.service import Infra, ServiceSpec, build_app

Settings = AuditSettings


def create_app(settings: AuditSettings | None = None) -> Starlette:
    """Build the audit service."""
    cfg = settings or AuditSettings()
    reviews = care.review_api(cfg.care)

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        handlers.register(
            infra.broker, cfg.kafka, handlers.AuditHandlers(Ledger(infra.require_pg()))
        )
        await care.wire(infra, stack, cfg.care, reviews)

    return build_app(
        ServiceSpec(
            name="audit",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            migrations=Path(__file__).parent / "migrations",
            routes=reviews.routes(),
        )
    )
