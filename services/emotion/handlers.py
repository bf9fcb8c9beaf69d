"""Emotion service subscribers."""

from __future__ import annotations

import logging

from services.emotion.analyzer import EmotionAnalyzer
from shared.events import (
    EmotionAnalysis,
    EmotionLabel,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnReceivedEvent,
)
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)


def neutral_analysis(model: str, reason: str) -> EmotionAnalysis:
    """The stand-in when the model fails: neutral, and flagged so nobody mistakes it."""
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[EmotionLabel.NEUTRAL] = 1.0
    return EmotionAnalysis(
        label=EmotionLabel.NEUTRAL,
        scores=scores,
        sentiment=0.0,
        intensity=0.0,
        explanation=f"analysis unavailable ({reason}); treated as neutral",
        model=model,
        degraded=True,
    )


class EmotionHandlers:
    """Attaches an emotion analysis to every customer turn."""

    def __init__(self, bus: EventBus, analyzer: EmotionAnalyzer) -> None:
        self.bus = bus
        self.analyzer = analyzer

    async def on_turn_received(self, event: TurnReceivedEvent) -> None:
        """Analyze the message and publish turn.analyzed."""
        message = event.payload.message
        try:
            analysis = self.analyzer.analyze(message.text)
        except Exception as exc:
            # Degrade, don't fail: the turn still reaches a reply, marked as unanalyzed.
            log.exception("emotion model failed")
            analysis = neutral_analysis(self.analyzer.MODEL_NAME, type(exc).__name__)
        await self.bus.publish(
            Topic.TURN_ANALYZED,
            event.derive(TurnAnalyzedEvent, TurnAnalyzed(message=message, emotion=analysis)),
        )
