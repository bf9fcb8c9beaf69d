"""Ingest service: the HTTP and WebSocket edge, channel webhooks, reply subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import httpx
from fastapi import FastAPI

from services.ingest.channels.identity import Conversations
from services.ingest.channels.outbound import MessagingOutbound
from services.ingest.channels.replies import ChannelReplies
from services.ingest.channels.survey import MessagingSurvey
from services.ingest.channels.voice import VoiceReplies
from services.ingest.delivery import ConnectionHub, conversation_fanout
from services.ingest.edge import EdgeGuard
from services.ingest.handlers import IngestHandlers
from services.ingest.intake import Intake
from services.ingest.ownership import Owners
from services.ingest.replay import TurnReplay
from services.ingest.routers import channels, ending, feedback, messages, pages, socket
from services.ingest.settings import IngestSettings
from services.ingest.shown import LastShown
from shared import http
from shared.events import (
    AssistSuggestedEvent,
    ConversationClosedEvent,
    CustomerErasedEvent,
    ReplyDeltaEvent,
    ReplyGeneratedEvent,
)
from shared.kafka import ensure_topics
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = IngestSettings

DESCRIPTION = """The platform's edge for customers: REST and WebSocket chat, the embeddable
widget, and the SMS, WhatsApp and voice providers' webhooks. Every message passes one intake:
sensitive numbers become tokens, limits are spent, the conversation is claimed for its
customer, and `turn.received` is published."""

ROUTERS = (
    messages.router,
    feedback.router,
    ending.router,
    socket.router,
    channels.router,
    pages.router,
)


def _background(stack: AsyncExitStack, work: Coroutine[Any, Any, None], name: str) -> None:
    """Run `work` until the service stops."""
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the ingest service."""
    cfg = settings or IngestSettings()
    hub = ConnectionHub()
    prefix = cfg.redis.key_prefix

    async def wire(infra: Infra, stack: AsyncExitStack) -> None:
        redis = infra.require_redis()
        fanout = conversation_fanout(redis, prefix, hub)
        _background(stack, fanout.run(), "ingest-delivery")
        await fanout.wait_listening()
        guard = EdgeGuard(cfg, redis)
        replay = None
        if cfg.replay_turns:
            replay = TurnReplay(
                redis,
                infra.bus,
                prefix,
                after_s=cfg.replay_after_s,
                attempts=cfg.replay_attempts,
                recreate_topics=(
                    partial(ensure_topics, cfg.kafka) if cfg.kafka.create_topics else None
                ),
                watch=infra.bus.watch,
            )
            _background(stack, replay.run(), "ingest-replay")
        owners = Owners(redis, prefix, cfg.owner_ttl_s)
        # Kept as long as a conversation stays open without a message.
        shown = LastShown(redis, prefix, cfg.conversation_idle_s)
        intake = Intake(cfg, infra.bus, redis, guard, owners, replay, shown)
        _background(stack, intake.bursts.run(), "ingest-bursts")
        conversations = Conversations(redis, prefix, cfg.conversation_idle_s)
        voice = VoiceReplies(redis, prefix)
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
        outbound = MessagingOutbound(cfg, redis, client)
        survey = MessagingSurvey(cfg, redis, conversations, outbound, intake)
        handlers = IngestHandlers(
            fanout, prefix, ChannelReplies(conversations, outbound, voice), survey, replay, shown
        )
        infra.subscribe(Topic.REPLY_DELTA, ReplyDeltaEvent, handlers.on_reply_delta)
        infra.subscribe(Topic.REPLY_GENERATED, ReplyGeneratedEvent, handlers.on_reply_generated)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)
        if replay is not None:
            # Turns a person holds get suggestions, not a reply: that settles them.
            infra.subscribe(
                Topic.ASSIST_SUGGESTED, AssistSuggestedEvent, handlers.on_assist_suggested
            )
        infra.subscribe(
            Topic.CONVERSATION_CLOSED, ConversationClosedEvent, handlers.on_conversation_closed
        )
        for collaborator in (intake, guard, fanout, conversations, voice, survey):
            infra.provide(collaborator)

    app = build_app(
        ServiceSpec(
            name="ingest",
            settings=cfg,
            wire=wire,
            uses_redis=True,
            routers=ROUTERS,
            max_body_bytes=cfg.max_body_bytes,
            description=DESCRIPTION,
        )
    )
    # Known before start-up: the pages serve while the rest is starting.
    http.provide(app, cfg)
    http.provide(app, hub)
    return app
