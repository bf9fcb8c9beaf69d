"""Unit tests for the conversation trajectory: moving average, trend, streaks, escalation risk."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.emotion.trajectory import (
    RECENT_TEXTS,
    SIGNAL_RISK,
    SMOOTHING,
    TREND_THRESHOLD,
    ConversationMood,
    advance,
    escalation_risk,
    is_negative,
    previous_texts,
    record_turn,
)
from shared.events import (
    EmotionAnalysis,
    EmotionLabel,
    EmotionTrajectory,
    Signal,
    Trend,
)


def analysis(
    label: EmotionLabel = EmotionLabel.NEUTRAL,
    sentiment: float = 0.0,
    intensity: float = 0.0,
    confidence: float = 1.0,
    signals: Sequence[str | tuple[str, float]] = (),
) -> EmotionAnalysis:
    """A hand-built analysis; signals are names, or (name, weight) pairs."""
    # Validated like an event from the wire: a name that is not a SignalName is refused.
    built = [
        Signal.model_validate(
            {"name": s, "evidence": s}
            if isinstance(s, str)
            else {"name": s[0], "evidence": s[0], "weight": s[1]}
        )
        for s in signals
    ]
    scores = dict.fromkeys(EmotionLabel, 0.0)
    scores[label] = confidence
    return EmotionAnalysis(
        label=label,
        scores=scores,
        sentiment=sentiment,
        intensity=intensity,
        signals=built,
        model="hand-built",
        confidence=confidence,
    )


def neutral() -> EmotionAnalysis:
    return analysis(EmotionLabel.NEUTRAL, 0.0, 0.0, 0.9)


def angry(intensity: float = 0.6) -> EmotionAnalysis:
    return analysis(EmotionLabel.ANGER, -0.7, intensity, 0.9)


def happy() -> EmotionAnalysis:
    return analysis(EmotionLabel.JOY, 0.7, 0.5, 0.9)


def unreadable() -> EmotionAnalysis:
    return analysis(EmotionLabel.NEUTRAL, 0.0, 0.0, 0.0)


def run(*turns: EmotionAnalysis) -> list[EmotionTrajectory]:
    mood = ConversationMood()
    return [advance(mood, a) for a in turns]


# --- the moving average and the trend --------------------------------------------------------


def test_first_turn_sets_the_average_to_its_sentiment_and_is_stable() -> None:
    mood = ConversationMood()
    first = advance(mood, analysis(EmotionLabel.FRUSTRATION, -0.4, 0.5, 0.8))

    assert first.turns == 1
    assert first.smoothed_sentiment == pytest.approx(-0.4)
    assert first.trend is Trend.STABLE
    assert mood.turns == 1
    assert mood.ema == pytest.approx(-0.4)


def test_drop_in_sentiment_is_worsening() -> None:
    s1, s2 = 0.5, -0.3
    expected = SMOOTHING * s2 + (1 - SMOOTHING) * s1
    assert expected - s1 <= -TREND_THRESHOLD  # the drop is big enough by construction

    _, second = run(analysis(EmotionLabel.JOY, s1, 0.3), analysis(EmotionLabel.NEUTRAL, s2))

    assert second.smoothed_sentiment == pytest.approx(expected, abs=1e-4)
    assert second.trend is Trend.WORSENING
    assert "worsening" in second.risk_factors


def test_rise_in_sentiment_is_improving() -> None:
    s1, s2 = -0.6, 0.4
    expected = SMOOTHING * s2 + (1 - SMOOTHING) * s1
    assert expected - s1 >= TREND_THRESHOLD

    _, second = run(analysis(EmotionLabel.SADNESS, s1, 0.5), analysis(EmotionLabel.JOY, s2, 0.4))

    assert second.smoothed_sentiment == pytest.approx(expected, abs=1e-4)
    assert second.trend is Trend.IMPROVING
    assert "worsening" not in second.risk_factors


def test_small_change_is_stable() -> None:
    s1 = 0.1
    s2 = s1 - TREND_THRESHOLD / SMOOTHING / 2  # moves the average by half the threshold
    expected = SMOOTHING * s2 + (1 - SMOOTHING) * s1
    assert abs(expected - s1) < TREND_THRESHOLD

    _, second = run(analysis(sentiment=s1), analysis(sentiment=s2))

    assert second.smoothed_sentiment == pytest.approx(expected, abs=1e-4)
    assert second.trend is Trend.STABLE


def test_average_over_several_turns_follows_the_smoothing_formula() -> None:
    sentiments = [0.2, -0.5, -0.8, 0.3, 0.9]
    trajectories = run(*(analysis(sentiment=s) for s in sentiments))

    ema = sentiments[0]
    assert trajectories[0].smoothed_sentiment == pytest.approx(ema, abs=1e-4)
    for s, trajectory in zip(sentiments[1:], trajectories[1:], strict=True):
        previous = ema
        ema = SMOOTHING * s + (1 - SMOOTHING) * previous
        assert trajectory.smoothed_sentiment == pytest.approx(ema, abs=1e-4)
        if ema - previous <= -TREND_THRESHOLD:
            assert trajectory.trend is Trend.WORSENING
        elif ema - previous >= TREND_THRESHOLD:
            assert trajectory.trend is Trend.IMPROVING
        else:
            assert trajectory.trend is Trend.STABLE
    assert [t.turns for t in trajectories] == [1, 2, 3, 4, 5]


def test_unreadable_turn_leaves_the_average_unchanged() -> None:
    mood = ConversationMood()
    advance(mood, analysis(EmotionLabel.FRUSTRATION, -0.6, 0.5, 0.8))

    held = advance(mood, unreadable())

    assert held.turns == 2
    assert held.smoothed_sentiment == pytest.approx(-0.6)
    assert mood.ema == pytest.approx(-0.6)
    assert held.trend is Trend.STABLE


def test_unreadable_first_turn_keeps_the_neutral_starting_point() -> None:
    (first,) = run(unreadable())

    assert first.turns == 1
    assert first.smoothed_sentiment == 0.0
    assert first.trend is Trend.STABLE
    assert first.escalation_risk == 0.0


# --- negativity, streaks, turns since negative ----------------------------------------------


@pytest.mark.parametrize(
    ("a", "negative"),
    [
        (analysis(EmotionLabel.NEUTRAL, -0.2, 0.1, 0.9), True),  # on the sentiment boundary
        (analysis(EmotionLabel.NEUTRAL, -0.19, 0.1, 0.9), False),
        (analysis(EmotionLabel.JOY, -0.3, 0.1, 0.9), True),  # sentiment alone is enough
        (analysis(EmotionLabel.FRUSTRATION, -0.1, 0.4, 0.5), True),  # confident negative label
        (analysis(EmotionLabel.ANXIETY, 0.0, 0.4, 0.7), True),
        (analysis(EmotionLabel.SADNESS, -0.1, 0.4, 0.49), False),  # label not confident enough
        (analysis(EmotionLabel.CONFUSION, -0.15, 0.4, 0.9), False),  # not a negative label
        (analysis(EmotionLabel.JOY, 0.8, 0.6, 0.9), False),
        (unreadable(), False),
    ],
)
def test_is_negative(a: EmotionAnalysis, negative: bool) -> None:
    assert is_negative(a) is negative


def test_negative_streak_counts_consecutive_negative_turns_and_resets() -> None:
    trajectories = run(angry(), angry(), neutral(), angry(), angry(), angry(), happy())

    assert [t.negative_streak for t in trajectories] == [1, 2, 0, 1, 2, 3, 0]


def test_turns_since_negative() -> None:
    trajectories = run(neutral(), happy(), angry(), neutral(), happy(), angry(), neutral())

    assert [t.turns_since_negative for t in trajectories] == [None, None, 0, 1, 2, 0, 1]


# --- escalation risk -------------------------------------------------------------------------


def test_human_request_raises_the_risk_by_its_weight() -> None:
    (plain,) = run(neutral())
    (asked,) = run(analysis(EmotionLabel.NEUTRAL, 0.0, 0.0, 0.9, ["human_request"]))

    assert plain.escalation_risk == 0.0
    assert asked.escalation_risk == pytest.approx(SIGNAL_RISK["human_request"], abs=1e-4)
    assert asked.escalation_risk > plain.escalation_risk
    assert asked.risk_factors == ["human_request"]


def test_signal_weight_scales_its_contribution() -> None:
    (half,) = run(analysis(signals=[("legal_threat", 0.5)]))

    assert half.escalation_risk == pytest.approx(0.5 * SIGNAL_RISK["legal_threat"], abs=1e-4)


def test_streak_of_negative_turns_raises_the_risk() -> None:
    trajectories = run(angry(), angry(), angry())
    risks = [t.escalation_risk for t in trajectories]

    assert risks[0] < risks[1] < risks[2]
    assert "2 negative turns in a row" in trajectories[1].risk_factors
    assert "3 negative turns in a row" in trajectories[2].risk_factors
    assert not any("in a row" in f for f in trajectories[0].risk_factors)
    # Same sentiment each turn: the average holds, so only the streak adds risk.
    assert all(t.trend is Trend.STABLE for t in trajectories)
    assert all(t.smoothed_sentiment == pytest.approx(-0.7) for t in trajectories)


def test_negative_mood_is_named_as_a_factor() -> None:
    (first,) = run(angry())

    assert any(f.startswith("negative mood") for f in first.risk_factors)
    assert first.escalation_risk > 0


def test_risk_stays_within_bounds_with_every_signal_at_once() -> None:
    every = [(name, 3.0) for name in SIGNAL_RISK]
    worst = analysis(EmotionLabel.ANGER, -1.0, 1.0, 1.0, every)
    trajectories = run(happy(), *([worst] * 6))

    for t in trajectories:
        assert 0.0 <= t.escalation_risk <= 1.0
    assert trajectories[-1].escalation_risk == 1.0
    assert trajectories[1].trend is Trend.WORSENING


def test_escalation_risk_is_clamped_directly() -> None:
    mood = ConversationMood(turns=9, negative_streak=9)
    worst = analysis(EmotionLabel.ANGER, -1.0, 1.0, 1.0, [(n, 10.0) for n in SIGNAL_RISK])

    risk, factors = escalation_risk(mood, worst, -1.0, Trend.WORSENING, negative=True)

    assert risk == 1.0
    assert set(SIGNAL_RISK) <= set(factors)
    assert "worsening" in factors
    assert "9 negative turns in a row" in factors

    calm, calm_factors = escalation_risk(
        ConversationMood(), happy(), 1.0, Trend.IMPROVING, negative=False
    )
    assert calm == 0.0
    assert calm_factors == []


def test_risk_factors_name_the_signals_and_ignore_unweighted_ones() -> None:
    a = analysis(
        EmotionLabel.FRUSTRATION,
        -0.1,
        0.4,
        0.3,
        ["churn_threat", "vulnerability", "punctuation_burst"],
    )
    (t,) = run(a)

    assert "churn_threat" in t.risk_factors
    assert "vulnerability" in t.risk_factors
    assert "punctuation_burst" not in t.risk_factors
    assert t.escalation_risk == pytest.approx(
        0.35 * 0.1 + SIGNAL_RISK["churn_threat"] + SIGNAL_RISK["vulnerability"], abs=1e-4
    )


# --- record_turn and previous_texts ----------------------------------------------------------


def test_record_turn_is_idempotent_per_turn_id() -> None:
    mood = ConversationMood()
    first = record_turn(mood, "turn-1", "where is my parcel?", angry())

    again = record_turn(mood, "turn-1", "where is my parcel?", happy())

    assert again == first
    assert mood.turns == 1
    assert mood.recent_texts == ["where is my parcel?"]
    assert mood.last_turn_id == "turn-1"


def test_record_turn_advances_for_a_new_turn_id() -> None:
    mood = ConversationMood()
    record_turn(mood, "turn-1", "first", angry())
    second = record_turn(mood, "turn-2", "second", angry())

    assert second.turns == 2
    assert second.negative_streak == 2
    assert mood.recent_texts == ["first", "second"]
    assert mood.last_turn_id == "turn-2"
    assert mood.last_result is not None
    assert EmotionTrajectory.model_validate_json(mood.last_result) == second


def test_previous_texts_leaves_out_own_text_on_redelivery() -> None:
    mood = ConversationMood()
    assert previous_texts(mood, "turn-1") == []
    record_turn(mood, "turn-1", "first", neutral())
    assert previous_texts(mood, "turn-2") == ["first"]
    record_turn(mood, "turn-2", "second", neutral())

    assert previous_texts(mood, "turn-2") == ["first"]  # redelivered: not its own text
    assert previous_texts(mood, "turn-3") == ["first", "second"]


def test_previous_texts_returns_a_copy() -> None:
    mood = ConversationMood()
    record_turn(mood, "turn-1", "first", neutral())

    texts = previous_texts(mood, "turn-2")
    texts.append("mutated")

    assert mood.recent_texts == ["first"]


def test_recent_texts_are_capped() -> None:
    mood = ConversationMood()
    texts = [f"message {i}" for i in range(RECENT_TEXTS + 3)]
    for i, text in enumerate(texts):
        record_turn(mood, f"turn-{i}", text, neutral())

    assert previous_texts(mood, "turn-next") == texts[-RECENT_TEXTS:]
    assert len(mood.recent_texts) <= RECENT_TEXTS + 1
    assert mood.turns == RECENT_TEXTS + 3


def test_recorded_text_is_truncated() -> None:
    mood = ConversationMood()
    record_turn(mood, "turn-1", "x" * 5000, neutral())

    assert mood.recent_texts == ["x" * 2000]


def test_redelivery_sees_the_same_history_as_the_first_delivery() -> None:
    mood = ConversationMood()
    for i in range(RECENT_TEXTS):
        record_turn(mood, f"turn-{i}", f"message {i}", neutral())

    first_delivery = previous_texts(mood, "turn-new")
    record_turn(mood, "turn-new", "message new", neutral())
    redelivery = previous_texts(mood, "turn-new")

    assert redelivery == first_delivery


def test_an_unreadable_turn_neither_breaks_nor_extends_a_negative_streak() -> None:
    mood = ConversationMood()
    angry = analysis(EmotionLabel.ANGER, sentiment=-0.8, intensity=0.9, confidence=0.9)
    record_turn(mood, "t1", "furious", angry)
    record_turn(mood, "t2", "???", analysis(EmotionLabel.NEUTRAL, sentiment=0.0, confidence=0.0))
    third = record_turn(mood, "t3", "still furious", angry)
    assert third.negative_streak == 2


def test_an_unreadable_first_turn_does_not_dilute_the_next() -> None:
    mood = ConversationMood()
    record_turn(mood, "t1", "", analysis(EmotionLabel.NEUTRAL, sentiment=0.0, confidence=0.0))
    second = record_turn(mood, "t2", "thanks!", analysis(EmotionLabel.JOY, sentiment=0.8))
    assert second.smoothed_sentiment == 0.8
