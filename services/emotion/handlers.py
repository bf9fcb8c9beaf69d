"""Emotion service subscribers."""

from __future__ import annotations

import logging

from prometheus_client import Counter, Summary
from redis.exceptions import RedisError

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.trajectory import (
    ConversationMood,
    TrajectoryStore,
    previous_texts,
    record_turn,
)
from shared.erasure import ERASURES, Subject, conversation_keys, delete_keys
from shared.events import (
    CustomerErasedEvent,
    EmotionTrajectory,
    TurnAnalyzed,
    TurnAnalyzedEvent,
    TurnReceivedEvent,
)
from shared.kafka import EventBus

log = logging.getLogger(__name__)

# The care dashboard's emotion mix and sentiment trend. Sentiment is a Summary, not a
# Histogram: prometheus-client drops a histogram's _sum once a bucket is negative, and the
# mean needs it. The share of negative turns comes from the polarity label instead.
TURNS_BY_EMOTION = Counter(
    "cbd_emotion_turns_total",
    "Customer turns analysed, by emotion label, sentiment polarity (negative below -0.05, "
    "positive above 0.05) and whether the model degraded.",
    ["label", "polarity", "degraded"],
)
SENTIMENT = Summary(
    "cbd_emotion_sentiment", "Sentiment of customer turns, -1 (negative) to 1 (positive)."
)


def polarity(sentiment: float) -> str:
    """negative, neutral or positive, with the usual +-0.05 neutral band."""
    if sentiment < -0.05:
        return "negative"
    return "positive" if sentiment > 0.05 else "neutral"


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
        TURNS_BY_EMOTION.labels(
            analysis.label.value, polarity(analysis.sentiment), str(analysis.degraded).lower()
        ).inc()
        SENTIMENT.observe(analysis.sentiment)
        trajectory: EmotionTrajectory | None = None
        if mood is not None:
            trajectory = record_turn(mood, turn_id, message.text, analysis)
            try:
                # Not for a customer erased while this turn was in flight (memory drops it).
                await self.trajectories.save(event.conversation_id, mood, subject=Subject.of(event))
            except RedisError:
                log.warning("could not store the trajectory (Redis)", exc_info=True)
        await self.bus.publish(
            event.derive(
                TurnAnalyzedEvent,
                TurnAnalyzed(
                    message=message,
                    emotion=analysis,
                    trajectory=trajectory,
                    after_reply_id=event.payload.after_reply_id,
                ),
            ),
        )

    async def on_customer_erased(self, event: CustomerErasedEvent) -> None:
        """Forget the erased customer's conversation moods; receipts first, so a turn still in
        flight stores no mood again."""
        store = self.trajectories
        await store.receipts.record(event)
        await delete_keys(
            store.redis, conversation_keys(event, store.prefix, ["emotion:{conversation}"])
        )
        ERASURES.inc()
