"""Unit tests for the escalation routing policy: the explicit-request rule and the verdict shape."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.emotion.analyzer import EmotionAnalyzer
from services.escalation.policy import (
    DEFAULT_POLICY_PATH,
    NO_RULE_MATCHED,
    ExplicitRequestRule,
    Policy,
    Rules,
    decide,
    load_policy,
)
from shared.events import (
    ConversationContext,
    CustomerMessage,
    EmotionAnalysis,
    RouteTarget,
    Signal,
    TurnContextualized,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

EXPLICIT_ONLY = Policy(
    version=1, name="explicit-only", rules=Rules(explicit_request=ExplicitRequestRule())
)
"""Only the explicit-request rule, so these tests see that rule alone."""


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.fixture(scope="module")
def shipped() -> Policy:
    return load_policy(DEFAULT_POLICY_PATH)


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
@pytest.mark.parametrize("policy_name", ["explicit-only", "default-v1"])
def test_explicit_request_routes_to_a_human(
    analyzer: EmotionAnalyzer, shipped: Policy, text: str, policy_name: str
) -> None:
    policy = EXPLICIT_ONLY if policy_name == "explicit-only" else shipped
    ctx = analyzed_turn(analyzer, text)
    evidence = next(s.evidence for s in ctx.emotion.signals if s.name == "human_request")

    decision = decide(ctx, policy)

    assert decision.target is RouteTarget.HUMAN
    assert decision.policy == policy_name
    assert [r.code for r in decision.reasons] == ["explicit_request"]
    assert evidence
    assert evidence in decision.reasons[0].detail


def test_real_person_request_names_its_evidence(analyzer: EmotionAnalyzer) -> None:
    decision = decide(analyzed_turn(analyzer, "let me talk to a real person"), EXPLICIT_ONLY)

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

    decision = decide(ctx, EXPLICIT_ONLY)

    assert decision.target is RouteTarget.BOT
    assert decision.policy == "explicit-only"
    assert [r.code for r in decision.reasons] == [NO_RULE_MATCHED]
    assert decision.reasons[0].detail


def test_the_shipped_policy_also_escalates_strong_anger(
    analyzer: EmotionAnalyzer, shipped: Policy
) -> None:
    decision = decide(analyzed_turn(analyzer, "This is UNACCEPTABLE, I am furious!!"), shipped)

    assert decision.target is RouteTarget.HUMAN
    assert [r.code for r in decision.reasons] == ["strong_emotion"]


@pytest.mark.parametrize("text", ["where is my parcel", "thanks, that fixed it"])
def test_the_shipped_policy_leaves_plain_turns_to_the_bot(
    analyzer: EmotionAnalyzer, shipped: Policy, text: str
) -> None:
    decision = decide(analyzed_turn(analyzer, text), shipped)

    assert decision.target is RouteTarget.BOT
    assert [r.code for r in decision.reasons] == [NO_RULE_MATCHED]


def test_other_signals_do_not_escalate(analyzer: EmotionAnalyzer) -> None:
    base = analyzer.analyze("where is my parcel")
    emotion = base.model_copy(
        update={
            "signals": [
                Signal(name="urgency", evidence="asap"),
                Signal(name="shouting", evidence=""),
            ]
        }
    )

    assert decide(turn("where is my parcel asap", emotion), EXPLICIT_ONLY).target is RouteTarget.BOT


def test_every_request_signal_is_named_in_one_reason(analyzer: EmotionAnalyzer) -> None:
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

    decision = decide(turn("anything", emotion), EXPLICIT_ONLY)

    assert decision.target is RouteTarget.HUMAN
    # One reason per firing rule, naming every piece of evidence for it.
    assert [r.code for r in decision.reasons] == ["explicit_request"]
    assert "real person" in decision.reasons[0].detail
    assert "live agent" in decision.reasons[0].detail


def test_a_disabled_explicit_request_rule_does_not_fire(analyzer: EmotionAnalyzer) -> None:
    off = Policy(
        version=1, name="off", rules=Rules(explicit_request=ExplicitRequestRule(enabled=False))
    )

    decision = decide(analyzed_turn(analyzer, "let me talk to a real person"), off)

    assert decision.target is RouteTarget.BOT


def test_decision_is_deterministic(analyzer: EmotionAnalyzer, shipped: Policy) -> None:
    ctx = analyzed_turn(analyzer, "let me talk to a real person")

    assert decide(ctx, shipped) == decide(ctx, shipped)
