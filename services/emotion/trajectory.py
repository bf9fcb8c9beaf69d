"""Where a conversation's feeling is heading, kept per conversation in Redis.

After each customer turn: a smoothed sentiment (exponential moving average), the trend, turns
since the last negative message, the current negative streak, and an escalation-risk score
with the factors behind it, which the escalation policy reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from shared.erasure import RedisReceipts, Subject
from shared.events import (
    NEGATIVE_EMOTIONS,
    NEGATIVE_SENTIMENT,
    EmotionAnalysis,
    EmotionTrajectory,
    Trend,
)

SMOOTHING = 0.5
"""Weight of the newest turn in the moving average: two turns mostly make the picture."""
TREND_THRESHOLD = 0.12
RECENT_TEXTS = 6

SIGNAL_RISK: dict[str, float] = {
    "human_request": 0.35,
    "legal_threat": 0.3,
    "vulnerability": 0.25,
    "churn_threat": 0.2,
    "repetition": 0.2,
    "profanity": 0.1,
    "shouting": 0.05,
}


@dataclass
class ConversationMood:
    """What is remembered about one conversation's feeling between turns."""

    turns: int = 0
    readable_turns: int = 0
    ema: float = 0.0
    negative_streak: int = 0
    last_negative_turn: int | None = None
    recent_texts: list[str] = field(default_factory=list)
    last_turn_id: str | None = None
    last_result: str | None = None


def is_negative(analysis: EmotionAnalysis) -> bool:
    """A turn counts as negative when its sentiment or a confident negative label says so."""
    return analysis.sentiment <= NEGATIVE_SENTIMENT or (
        analysis.label in NEGATIVE_EMOTIONS and analysis.confidence >= 0.5
    )


def advance(mood: ConversationMood, analysis: EmotionAnalysis) -> EmotionTrajectory:
    """Fold one analysed turn into the mood and describe the trajectory after it."""
    previous = mood.ema
    mood.turns += 1
    readable = analysis.confidence > 0.0
    negative = readable and is_negative(analysis)
    if not readable:
        # Unreadable input says nothing about how the customer feels: the average and the
        # negative streak hold, neither reset nor extended by it.
        current = previous
    elif mood.readable_turns == 0:
        current = analysis.sentiment
    else:
        current = SMOOTHING * analysis.sentiment + (1 - SMOOTHING) * previous
    if readable:
        mood.readable_turns += 1
        mood.negative_streak = mood.negative_streak + 1 if negative else 0
    mood.ema = current
    if negative:
        mood.last_negative_turn = mood.turns
    since = None if mood.last_negative_turn is None else mood.turns - mood.last_negative_turn

    trend = Trend.STABLE
    if mood.turns > 1:
        if current - previous <= -TREND_THRESHOLD:
            trend = Trend.WORSENING
        elif current - previous >= TREND_THRESHOLD:
            trend = Trend.IMPROVING

    risk, factors = escalation_risk(mood, analysis, current, trend, negative=negative)
    return EmotionTrajectory(
        turns=mood.turns,
        smoothed_sentiment=round(max(-1.0, min(1.0, current)), 4),
        trend=trend,
        turns_since_negative=since,
        negative_streak=mood.negative_streak,
        escalation_risk=round(risk, 4),
        risk_factors=factors,
    )


def escalation_risk(
    mood: ConversationMood,
    analysis: EmotionAnalysis,
    smoothed: float,
    trend: Trend,
    *,
    negative: bool,
) -> tuple[float, list[str]]:
    """A 0-1 score of how much this conversation needs a person now, and why."""
    factors: list[str] = []
    risk = 0.35 * max(0.0, -smoothed)
    if smoothed <= -0.3:
        factors.append(f"negative mood ({smoothed:+.2f})")
    if negative:
        risk += 0.2 * analysis.intensity
    if mood.negative_streak >= 2:
        risk += 0.1 * min(mood.negative_streak - 1, 3)
        factors.append(f"{mood.negative_streak} negative turns in a row")
    if trend is Trend.WORSENING:
        risk += 0.1
        factors.append("worsening")
    for signal in analysis.signals:
        weight = SIGNAL_RISK.get(signal.name)
        if weight:
            risk += weight * signal.weight
            factors.append(signal.name)
    return max(0.0, min(1.0, risk)), factors


class TrajectoryStore:
    """Conversation moods in Redis, with a TTL; one hash per conversation."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str, ttl_s: int) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.ttl_s = ttl_s
        self.receipts = RedisReceipts(redis, key_prefix)

    def _key(self, conversation_id: str) -> str:
        return f"{self.prefix}emotion:{conversation_id}"

    async def load(self, conversation_id: str) -> ConversationMood:
        """The conversation's mood so far (a fresh one if none is stored)."""
        raw = await self.redis.get(self._key(conversation_id))
        if raw is None:
            return ConversationMood()
        return ConversationMood(**json.loads(raw))

    async def save(
        self, conversation_id: str, mood: ConversationMood, *, subject: Subject | None = None
    ) -> bool:
        """Store the mood and renew its TTL; with `subject` (the turn), not when the turn is
        about a customer erased before it arrived (False; `shared.erasure.RedisReceipts`)."""
        value = json.dumps(mood.__dict__)
        if subject is None:
            await self.redis.set(self._key(conversation_id), value, ex=self.ttl_s)
            return True
        return await self.receipts.set_unless_late(
            self._key(conversation_id), value, self.ttl_s, subject, "emotion.trajectories"
        )


def previous_texts(mood: ConversationMood, turn_id: str) -> list[str]:
    """Earlier customer texts, leaving out this turn's own if it is being redelivered."""
    if mood.last_turn_id == turn_id:
        return mood.recent_texts[:-1][-RECENT_TEXTS:]
    return mood.recent_texts[-RECENT_TEXTS:]


def record_turn(
    mood: ConversationMood, turn_id: str, text: str, analysis: EmotionAnalysis
) -> EmotionTrajectory:
    """Advance the mood by this turn once; a redelivered turn gets its earlier result back."""
    if mood.last_turn_id == turn_id and mood.last_result is not None:
        return EmotionTrajectory.model_validate_json(mood.last_result)
    trajectory = advance(mood, analysis)
    # One more than is ever shown, so a redelivered turn still sees a full history.
    mood.recent_texts = [*mood.recent_texts, text[:2000]][-(RECENT_TEXTS + 1) :]
    mood.last_turn_id = turn_id
    mood.last_result = trajectory.model_dump_json()
    return trajectory
