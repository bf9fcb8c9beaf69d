"""Emotion service: FastStream subscribers plus /metrics, /livez and /readyz."""

from __future__ import annotations

from contextlib import AsyncExitStack

from starlette.applications import Starlette

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.handlers import EmotionHandlers
from services.emotion.settings import EmotionSettings
from shared.events import TurnReceivedEvent
from shared.service import Infra, ServiceSpec, build_app
from shared.topics import Topic

Settings = EmotionSettings


def create_app(settings: EmotionSettings | None = None) -> Starlette:
    """Build the emotion service."""

    async def wire(infra: Infra, _: AsyncExitStack) -> None:
        handlers = EmotionHandlers(infra.bus, EmotionAnalyzer())
        infra.subscribe(Topic.TURN_RECEIVED, TurnReceivedEvent, handlers.on_turn_received)

    return build_app(ServiceSpec(name="emotion", settings=settings or EmotionSettings(), wire=wire))
