"""Ingest service: HTTP and WebSocket edge, reply subscribers, /metrics, /livez, /readyz."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from services.ingest.api import IngestAPI
from services.ingest.channels.bursts import BurstMerger
from services.ingest.channels.identity import Conversations
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.routes import ChannelAPI
from services.ingest.channels.voice import VoiceReplies
from services.ingest.delivery import ConnectionHub, Fanout
from services.ingest.handlers import IngestHandlers
from services.ingest.openapi import openapi_endpoint
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
    channel_api = ChannelAPI(cfg, api.guard)

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        fanout = Fanout(infra.require_redis(), cfg.redis.key_prefix, hub)
        listener = asyncio.create_task(fanout.run(), name="ingest-delivery")

        async def stop_listener() -> None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

        stack.push_async_callback(stop_listener)
        await fanout.wait_listening()
        redis = infra.require_redis()
        conversations = Conversations(redis, cfg.redis.key_prefix, cfg.conversation_idle_s)
        voice = VoiceReplies(redis, cfg.redis.key_prefix)
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
        bursts = BurstMerger(redis, cfg.redis.key_prefix, cfg.burst_window_ms, api.accept)
        sweeper = asyncio.create_task(bursts.run(), name="ingest-bursts")

        async def stop_sweeper() -> None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

        stack.push_async_callback(stop_sweeper)
        channel_api.accept = api.accept
        channel_api.conversations = conversations
        channel_api.bursts = bursts
        channel_api.voice = voice
        api.guard.redis = redis
        channels = ChannelReplies(conversations, MessagingOutbound(cfg, redis, client), voice)
        handlers = IngestHandlers(fanout, cfg.redis.key_prefix, channels)
        infra.subscribe(Topic.REPLY_DELTA, ReplyDeltaEvent, handlers.on_reply_delta)
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)
        api.redis = infra.redis
        api.fanout = fanout
        api.bus = infra.bus

    return build_app(
        ServiceSpec(
            name="ingest",
            settings=cfg,
            wire=wire,
            uses_redis=True,
            routes=[
                *api.routes(),
                *channel_api.routes(),
                Route("/openapi.json", openapi_endpoint, methods=["GET"]),
            ],
        )
    )
