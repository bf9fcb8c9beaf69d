"""Memory service: FastStream subscribers plus /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from starlette.applications import Starlette

from services.memory.handlers import MemoryHandlers
from services.memory.settings import MemorySettings
from services.memory.turns import TurnStore
from shared.events import ReplyGeneratedEvent, TurnAnalyzedEvent
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = MemorySettings


def create_app(settings: MemorySettings | None = None) -> Starlette:
    """Build the memory service."""
    cfg = settings or MemorySettings()

    async def wire(infra: Infra, _: AsyncExitStack) -> None:
        store = TurnStore(
            infra.require_pg(),
            infra.require_redis(),
            key_prefix=cfg.redis.key_prefix,
            keep=cfg.recent_turns,
            ttl_s=cfg.session_ttl_s,
        )
        handlers = MemoryHandlers(infra.bus, store, keep=cfg.recent_turns)
        infra.subscribe(Topic.TURN_ANALYZED, TurnAnalyzedEvent, handlers.on_turn_analyzed)
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)

    return build_app(
        ServiceSpec(
            name="memory",
            settings=cfg,
            wire=wire,
            uses_postgres=True,
            uses_redis=True,
            migrations=Path(__file__).parent / "migrations",
        )
    )
