"""Unit tests for the lexicon + VADER emotion model."""

from __future__ import annotations

import pytest

from services.emotion.lexicon import LexiconAnalyzer as EmotionAnalyzer
from shared.events import EmotionAnalysis, EmotionLabel


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


def signal_names(result: EmotionAnalysis) -> set[str]:
    return {signal.name for signal in result.signals}


def evidence_of(result: EmotionAnalysis, name: str) -> str:
    return next(signal.evidence for signal in result.signals if signal.name == name)


def test_anger_with_shouting_and_punctuation_burst(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("This is UNACCEPTABLE, I am furious!!")

    assert result.label is EmotionLabel.ANGER
    assert {"shouting", "punctuation_burst"} <= signal_names(result)
    assert "UNACCEPTABLE" in evidence_of(result, "shouting")
    assert evidence_of(result, "punctuation_burst") == "!!"
    assert result.sentiment < 0
    assert result.model == EmotionAnalyzer.MODEL_NAME == "lexicon-vader-v1"
    assert result.degraded is False


def test_frustration_from_repeated_asking(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("I've asked three times and it's still not fixed")

    assert result.label is EmotionLabel.FRUSTRATION


def test_anxiety_about_fraud_is_also_a_vulnerability(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("I'm really worried someone used my card for fraud")

    assert result.label is EmotionLabel.ANXIETY
    assert "fraud" in evidence_of(result, "vulnerability")


def test_bereavement_is_sadness_and_vulnerability_not_churn(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("My husband passed away and I need to close his account")

    assert result.label is EmotionLabel.SADNESS
    assert evidence_of(result, "vulnerability") == "passed away"
    assert "churn_threat" not in signal_names(result)


def test_confusion(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("I don't understand which plan I'm on?")

    assert result.label is EmotionLabel.CONFUSION


def test_joy_has_positive_sentiment(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("Thank you so much, that's perfect!")

    assert result.label is EmotionLabel.JOY
    assert result.sentiment > 0.5
    assert analyzer.analyze("I can't thank you enough").label is EmotionLabel.JOY


def test_plain_question_is_neutral_and_calm(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("What are your opening hours")

    assert result.label is EmotionLabel.NEUTRAL
    assert result.signals == []
    assert result.intensity < 0.1
    assert result.sentiment == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "This is UNACCEPTABLE, I am furious!!",
        "I've asked three times and it's still not fixed",
        "Thank you so much, that's perfect!",
        "What are your opening hours",
        "I don't understand which plan I'm on?",
        "lawyer ombudsman fraud urgent!!! WHY WHY WHY",
        "\U0001f621\U0001f621\U0001f621",
    ],
)
def test_scores_are_a_distribution_over_all_labels(analyzer: EmotionAnalyzer, text: str) -> None:
    result = analyzer.analyze(text)

    assert set(result.scores) == set(EmotionLabel)
    assert all(score >= 0 for score in result.scores.values())
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert result.scores[result.label] == max(result.scores.values())
    assert 0.0 <= result.intensity <= 1.0
    assert -1.0 <= result.sentiment <= 1.0


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human",
        "Can I SPEAK TO A PERSON please",
        "Is there a real person there?",
        "agent please",
        "Let me talk to someone who can actually help",
        "Representative.",
        "human please!!",
        "I need to speak to a manager right now",
        "Please transfer me to an agent",
    ],
)
def test_human_request_phrasings(analyzer: EmotionAnalyzer, text: str) -> None:
    result = analyzer.analyze(text)

    assert "human_request" in signal_names(result)
    assert evidence_of(result, "human_request").lower() in text.lower()


@pytest.mark.parametrize(
    "text",
    ["I'm human too", "Humans make mistakes, no worries", "Is this a person-to-person payment?"],
)
def test_human_request_not_triggered_by_mentions(analyzer: EmotionAnalyzer, text: str) -> None:
    assert "human_request" not in signal_names(analyzer.analyze(text))


def test_repetition_of_an_earlier_message(analyzer: EmotionAnalyzer) -> None:
    previous = ["Hello", "Where is my refund for order 1234?"]

    result = analyzer.analyze("where is my REFUND for order 1234!!", previous)

    assert "repetition" in signal_names(result)
    assert "REFUND" in evidence_of(result, "repetition")
    assert result.label is EmotionLabel.FRUSTRATION


def test_no_repetition_for_a_different_message_or_no_history(analyzer: EmotionAnalyzer) -> None:
    text = "Where is my refund for order 1234?"

    assert "repetition" not in signal_names(analyzer.analyze(text))
    different = analyzer.analyze(text, ["Can I change my delivery address for order 1234?"])
    assert "repetition" not in signal_names(different)


def test_short_acknowledgements_are_not_repetition(analyzer: EmotionAnalyzer) -> None:
    assert "repetition" not in signal_names(analyzer.analyze("thank you", ["Thank you!"]))


@pytest.mark.parametrize(
    ("text", "signal", "evidence"),
    [
        ("I need this fixed urgently", "urgency", "urgently"),
        ("Please sort it ASAP", "urgency", "ASAP"),
        ("I'm going to cancel my account", "churn_threat", "cancel my account"),
        ("I'll switch to Vodafone then", "churn_threat", "switch to Vodafone"),
        ("My lawyer will hear about this", "legal_threat", "lawyer"),
        ("I'm taking this to the ombudsman", "legal_threat", "ombudsman"),
        ("This is bullshit", "profanity", "bullshit"),
        ("I lost my job and can't afford the bill", "vulnerability", "can't afford"),
        ("I'm in hospital this week", "vulnerability", "hospital"),
    ],
)
def test_keyword_signals_carry_their_words(
    analyzer: EmotionAnalyzer, text: str, signal: str, evidence: str
) -> None:
    result = analyzer.analyze(text)

    assert signal in signal_names(result)
    assert evidence in evidence_of(result, signal)


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Can I switch to the annual plan?", "churn_threat"),
        ("I'm sick of waiting", "vulnerability"),
        ("My ATM PIN is not working", "shouting"),
        ("Why??", "punctuation_burst"),
        ("Sue from your team was lovely", "profanity"),
    ],
)
def test_signals_avoid_common_false_positives(
    analyzer: EmotionAnalyzer, text: str, signal: str
) -> None:
    assert signal not in signal_names(analyzer.analyze(text))


def test_all_caps_message_is_shouting(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("WHERE IS MY PARCEL")

    assert "shouting" in signal_names(result)
    assert next(s for s in result.signals if s.name == "shouting").weight == 1.0


def test_shouting_raises_intensity(analyzer: EmotionAnalyzer) -> None:
    calm = analyzer.analyze("this is ridiculous, I want my money back")
    loud = analyzer.analyze("THIS IS RIDICULOUS, I WANT MY MONEY BACK!!!")

    assert loud.intensity > calm.intensity


def test_negated_keywords_do_not_count(analyzer: EmotionAnalyzer) -> None:
    assert analyzer.analyze("I'm not worried about it").label is not EmotionLabel.ANXIETY
    assert analyzer.analyze("That was not very helpful").label is not EmotionLabel.JOY
    assert analyzer.analyze("Honestly, not great").label is not EmotionLabel.JOY


def test_explanation_names_trigger_words_signals_and_sentiment(
    analyzer: EmotionAnalyzer,
) -> None:
    result = analyzer.analyze("This is UNACCEPTABLE, I am furious!!")

    assert result.explanation.startswith("anger from ")
    assert "'furious'" in result.explanation
    assert "shouting" in result.explanation
    assert f"sentiment {result.sentiment:.2f}" in result.explanation


@pytest.mark.parametrize(
    "text", ["", "   \n\t", "\U0001f600", "x" * 4000, "\x00\ufffd\u202e", "?!" * 2000, "A" * 4000]
)
def test_never_raises_on_odd_input(analyzer: EmotionAnalyzer, text: str) -> None:
    result = analyzer.analyze(text, [text, ""])

    assert isinstance(result, EmotionAnalysis)
    assert result.degraded is False
    assert sum(result.scores.values()) == pytest.approx(1.0, abs=1e-6)


def test_empty_message_is_neutral(analyzer: EmotionAnalyzer) -> None:
    result = analyzer.analyze("")

    assert result.label is EmotionLabel.NEUTRAL
    assert result.scores[EmotionLabel.NEUTRAL] == 1.0
    assert result.intensity == 0.0
    assert result.signals == []


def test_internal_failure_returns_degraded_neutral(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EmotionAnalyzer()

    def explode(text: str) -> dict[str, float]:
        raise RuntimeError("boom")

    monkeypatch.setattr(broken._vader, "polarity_scores", explode)
    result = broken.analyze("This is UNACCEPTABLE, I am furious!!")

    assert result.label is EmotionLabel.NEUTRAL
    assert result.degraded is True
