"""Sarcasm and irony read as the complaint they are, sincere praise still as joy."""

from __future__ import annotations

import pytest

from services.emotion.analyzer import EmotionAnalyzer
from services.emotion.irony import IronyCues, IronyFinder
from services.emotion.lexicon import LexiconAnalyzer
from shared.events import NEGATIVE_EMOTIONS, EmotionLabel

SARCASTIC = [
    "thanks for nothing",
    "Thanks a lot for nothing.",
    "Oh brilliant... truly amazing service",
    "Great... just great.",
    "great, just great",
    "I love waiting on hold for an hour",
    "Oh great, another password reset.",
    "Late again, what a surprise.",
    "great job losing my parcel",
    "best support ever /s",
]
SINCERE = [
    "thanks, that's great!",
    "Thank you, the service was amazing!",
    "Oh great, thanks so much!",
    "I love the new app",
    "perfect, thanks for sorting it",
    "Great, that worked, thank you",
]


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


@pytest.mark.parametrize("text", SARCASTIC)
def test_sarcasm_is_negative(analyzer: EmotionAnalyzer, text: str) -> None:
    result = analyzer.analyze(text)
    assert result.label in NEGATIVE_EMOTIONS, result.explanation
    assert result.sentiment < 0
    assert "irony:" in result.explanation


@pytest.mark.parametrize("text", SARCASTIC)
def test_sarcasm_is_negative_for_the_lexicon_alone(text: str) -> None:
    result = LexiconAnalyzer().analyze(text)
    assert result.label in NEGATIVE_EMOTIONS, result.explanation
    assert result.sentiment < 0


@pytest.mark.parametrize("text", SINCERE)
def test_sincere_praise_stays_joy(analyzer: EmotionAnalyzer, text: str) -> None:
    assert IronyFinder().find(text) == []
    result = analyzer.analyze(text)
    assert result.label is EmotionLabel.JOY, result.explanation
    assert result.sentiment > 0


def test_a_cue_that_needs_backtracking_is_refused() -> None:
    with pytest.raises(ValueError, match="RE2"):
        IronyFinder(IronyCues(cues=["thanks(?= for nothing)"]))


def test_a_hostile_message_is_read_in_one_pass() -> None:
    # RE2 runs in time linear in the text: a wall of spaces and near-misses finds nothing
    # rather than backtracking (the cue file's patterns would be quadratic in Python's re).
    text = "great" + " " * 5000 + "just" + ",great" * 2000
    assert IronyFinder().find(text) == []
