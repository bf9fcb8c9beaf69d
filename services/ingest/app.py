"""Ingest service: HTTP and WebSocket edge, reply subscribers, /metrics, /livez, /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

from starlette.applications import Starlette

from services.ingest.api import IngestAPI
from services.ingest.delivery import ConnectionHub, Fanout
from services.ingest.handlers import IngestHandlers
from services.ingest.settings import IngestSettings
from shared.events import CustomerErasedEvent, ReplyDeltaEvent, ReplyGeneratedEvent
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = IngestSettings


def create_app(settings: IngestSettings | None = None) -> Starlette:
    """Build the ingest service."""
    cfg = settings or IngestSettings()
    hub = ConnectionHub()
    api = IngestAPI(cfg, hub)

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        fanout = Fanout(infra.require_redis(), cfg.redis.key_prefix, hub)
        listener = asyncio.create_task(fanout.run(), name="ingest-delivery")

        async def stop_listener() -> None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

        stack.push_async_callback(stop_listener)
        await fanout.wait_listening()
        handlers = IngestHandlers(fanout, cfg.redis.key_prefix)
        infra.subscribe(Topic.REPLY_DELTA, ReplyDeltaEvent, handlers.on_reply_delta)
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)
        api.redis = infra.redis
        api.bus = infra.bus

    return build_app(
        ServiceSpec(name="ingest", settings=cfg, wire=wire, uses_redis=True, routes=api.routes())
    )
