"""Emotion service subscribers."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.trajectory import (
    ConversationMood,
    TrajectoryStore,
    previous_texts,
    record_turn,
)
from shared.events import EmotionTrajectory, TurnAnalyzed, TurnAnalyzedEvent, TurnReceivedEvent
from shared.kafka import EventBus
from shared.topics import Topic

log = logging.getLogger(__name__)


class EmotionHandlers:
    """Attaches an emotion analysis and the conversation's trajectory to every customer turn."""

    def __init__(
        self, bus: EventBus, analyzer: EmotionAnalyzer, trajectories: TrajectoryStore
    ) -> None:
        self.bus = bus
        self.analyzer = analyzer
        self.trajectories = trajectories

    async def on_turn_received(self, event: TurnReceivedEvent) -> None:
        """Analyse the message, advance the trajectory, publish turn.analyzed."""
        message = event.payload.message
        turn_id = str(message.turn_id)
        mood: ConversationMood | None
        try:
            mood = await self.trajectories.load(event.conversation_id)
        except RedisError:
            # Degrade, don't fail: the turn goes on analysed, without its trajectory.
            log.warning("trajectory unavailable (Redis)", exc_info=True)
            mood = None
        history = previous_texts(mood, turn_id) if mood is not None else []
        analysis = self.analyzer.analyze(message.text, history)
        trajectory: EmotionTrajectory | None = None
        if mood is not None:
            trajectory = record_turn(mood, turn_id, message.text, analysis)
            try:
                await self.trajectories.save(event.conversation_id, mood)
            except RedisError:
                log.warning("could not store the trajectory (Redis)", exc_info=True)
        await self.bus.publish(
            Topic.TURN_ANALYZED,
            event.derive(
                TurnAnalyzedEvent,
                TurnAnalyzed(message=message, emotion=analysis, trajectory=trajectory),
            ),
        )
