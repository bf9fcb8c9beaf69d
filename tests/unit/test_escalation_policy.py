"""Unit tests for the escalation routing policy."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.emotion.analyzer import EmotionAnalyzer
from services.escalation.policy import POLICY_NAME, decide
from shared.events import (
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    RouteTarget,
    Signal,
    TurnContextualized,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


def turn(text: str, emotion: EmotionAnalysis) -> TurnContextualized:
    return TurnContextualized(
        message=CustomerMessage(turn_id=uuid.uuid4(), text=text, received_at=NOW),
        emotion=emotion,
        context=ConversationContext(),
    )


def analyzed_turn(analyzer: EmotionAnalyzer, text: str) -> TurnContextualized:
    return turn(text, analyzer.analyze(text))


@pytest.mark.parametrize(
    "text",
    [
        "let me talk to a real person",
        "Can I speak to a human please?",
        "transfer me to an agent",
        "I want a manager",
    ],
)
def test_explicit_request_routes_to_a_human(analyzer: EmotionAnalyzer, text: str) -> None:
    ctx = analyzed_turn(analyzer, text)
    evidence = next(s.evidence for s in ctx.emotion.signals if s.name == "human_request")

    decision = decide(ctx)

    assert decision.target is RouteTarget.HUMAN
    assert decision.policy == POLICY_NAME
    assert [r.code for r in decision.reasons] == ["explicit_request"]
    assert evidence
    assert evidence in decision.reasons[0].detail


def test_real_person_request_names_its_evidence(analyzer: EmotionAnalyzer) -> None:
    decision = decide(analyzed_turn(analyzer, "let me talk to a real person"))

    assert decision.target is RouteTarget.HUMAN
    assert "real person" in decision.reasons[0].detail


@pytest.mark.parametrize(
    "text",
    [
        "where is my parcel",
        "This is UNACCEPTABLE, I am furious!!",
        "thanks, that fixed it",
        "is this a real leather bag?",
    ],
)
def test_no_request_routes_to_the_bot(analyzer: EmotionAnalyzer, text: str) -> None:
    ctx = analyzed_turn(analyzer, text)
    assert all(s.name != "human_request" for s in ctx.emotion.signals)

    decision = decide(ctx)

    assert decision.target is RouteTarget.BOT
    assert decision.policy == POLICY_NAME
    assert [r.code for r in decision.reasons] == ["default"]


def test_other_signals_do_not_escalate(analyzer: EmotionAnalyzer) -> None:
    base = analyzer.analyze("where is my parcel")
    emotion = base.model_copy(
        update={"signals": [Signal(name="urgency", evidence="asap"), Signal(name="x", evidence="")]}
    )

    assert decide(turn("where is my parcel asap", emotion)).target is RouteTarget.BOT


def test_every_request_signal_becomes_a_reason(analyzer: EmotionAnalyzer) -> None:
    base = analyzer.analyze("where is my parcel")
    emotion = base.model_copy(
        update={
            "signals": [
                Signal(name="human_request", evidence="real person"),
                Signal(name="urgency", evidence="asap"),
                Signal(name="human_request", evidence="live agent"),
            ]
        }
    )

    decision = decide(turn("anything", emotion))

    assert decision.target is RouteTarget.HUMAN
    assert [r.code for r in decision.reasons] == ["explicit_request", "explicit_request"]
    assert "real person" in decision.reasons[0].detail
    assert "live agent" in decision.reasons[1].detail


def test_decision_is_deterministic(analyzer: EmotionAnalyzer) -> None:
    ctx = analyzed_turn(analyzer, "let me talk to a real person")

    assert decide(ctx) == decide(ctx)
