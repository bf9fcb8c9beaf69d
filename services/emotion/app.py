"""Emotion service: FastStream subscribers plus /metrics, /livez and /readyz."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from fastapi import FastAPI

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.handlers import EmotionHandlers
from services.emotion.settings import EmotionSettings
from services.emotion.trajectory import TrajectoryStore
from services.emotion.transformer import load_model_from_settings
from shared.events import CustomerErasedEvent, TurnReceivedEvent
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = EmotionSettings


def create_app(settings: EmotionSettings | None = None) -> FastAPI:
    """Build the emotion service."""
    cfg = settings or EmotionSettings()

    async def wire(infra: Infra, _: AsyncExitStack) -> None:
        # Training (or loading a transformer) takes a while; keep the loop free for probes.
        analyzer = await asyncio.to_thread(
            lambda: EmotionAnalyzer(model=load_model_from_settings(cfg.model, cfg.model_dir))
        )
        trajectories = TrajectoryStore(
            infra.require_redis(), cfg.redis.key_prefix, cfg.session_ttl_s
        )
        handlers = EmotionHandlers(infra.bus, analyzer, trajectories)
        infra.subscribe(Topic.TURN_RECEIVED, TurnReceivedEvent, handlers.on_turn_received)
        infra.subscribe(Topic.CUSTOMER_ERASED, CustomerErasedEvent, handlers.on_customer_erased)

    return build_app(ServiceSpec(name="emotion", settings=cfg, wire=wire, uses_redis=True))
